"""The audit log's logic under pytest, without wasm (wharf_sdk.testing.TestHost)."""

import pytest
from app import AuditLog

from wharf_sdk import Message, Reject, Retry
from wharf_sdk.testing import Queue, TestHost


def record(**fields):
    return Message.new("audit.record", fields)


def test_entries_are_numbered_per_entity_and_published():
    host = TestHost()
    host.handle(AuditLog, record(entity="order-7", actor="ana", action="refund"))
    host.handle(AuditLog, record(entity="order-7", actor="bob", action="ship"))
    host.handle(AuditLog, record(entity="order-8", actor="ana", action="cancel"))

    assert host.state_json("seq:order-7") == 2
    assert host.state_json("seq:order-8") == 1
    assert host.state_json("entry:order-7:2")["actor"] == "bob"
    assert [(p.destination, p.kind) for p in host.published] == [(Queue("audit-feed"), "audit.recorded")] * 3
    assert host.published[1].json() == {
        "entity": "order-7",
        "seq": 2,
        "actor": "bob",
        "action": "ship",
        "message": "00000000-0000-7000-8000-000000000001",
    }
    assert host.logs[0].message == "order-7 entry 1: ana refund"
    assert host.logs[0].fields == [("entity", "order-7")]


def test_a_record_that_follows_a_missing_entry_is_retried_with_the_configured_delay():
    host = TestHost().config("retry_ms", "250")
    with pytest.raises(Retry) as retry:
        host.handle(AuditLog, record(entity="order-7", actor="ana", action="ship", after=1))
    assert retry.value.delay_ms == 250
    assert host.published == [] and host.state_value("seq:order-7") is None

    host.handle(AuditLog, record(entity="order-7", actor="ana", action="pack"))
    host.handle(AuditLog, record(entity="order-7", actor="ana", action="ship", after=1))
    assert host.state_json("entry:order-7:2")["action"] == "ship"


def test_incomplete_or_malformed_records_are_rejected():
    host = TestHost()
    with pytest.raises(Reject, match="has no action"):
        host.handle(AuditLog, record(entity="order-7", actor="ana"))
    with pytest.raises(Reject, match="JSON object"):
        host.handle(AuditLog, Message.new("audit.record", [1, 2]))
    with pytest.raises(Reject, match="not valid JSON"):
        host.handle(AuditLog, Message("1", "audit.record", "inbox:test", payload=b"{nope"))
    assert host.published == []


def test_a_bad_retry_setting_is_a_rejection_naming_the_key():
    host = TestHost().config("retry_ms", "soon")
    with pytest.raises(Reject, match="'retry_ms'"):
        host.handle(AuditLog, record(entity="e", actor="a", action="b", after=3))
