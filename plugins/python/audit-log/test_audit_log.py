"""The audit log's logic under pytest, without wasm (wharf_sdk.testing.TestHost)."""

import pytest
from app import AuditLog

from wharf_sdk import Message, Reject
from wharf_sdk.testing import Queue, TestHost


def record(entity, **fields):
    return Message.new("audit.record", fields, key=entity)


def test_it_asks_for_the_records_of_an_entity_in_order():
    assert AuditLog().manifest().keeps_order


def test_entries_are_numbered_per_entity_and_published_with_its_key():
    host = TestHost()
    host.handle(AuditLog, record("order-7", actor="ana", action="refund"))
    host.handle(AuditLog, record("order-7", actor="bob", action="ship", note="x" * 500))
    host.handle(AuditLog, record("order-8", actor="ana", action="cancel"))

    assert host.state_json("seq:order-7") == 2
    assert host.state_json("seq:order-8") == 1
    assert host.state_json("entry:order-7:2")["actor"] == "bob"
    assert [(p.destination, p.kind, p.key) for p in host.published] == [
        (Queue("audit-feed"), "audit.recorded", "order-7"),
        (Queue("audit-feed"), "audit.recorded", "order-7"),
        (Queue("audit-feed"), "audit.recorded", "order-8"),
    ]
    assert host.published[1].json() == {
        "entity": "order-7",
        "seq": 2,
        "actor": "bob",
        "action": "ship",
        "message": "00000000-0000-7000-8000-000000000001",
        "note": "x" * 200,
    }
    assert host.logs[0].message == "order-7 entry 1: ana refund"
    assert host.logs[0].fields == [("entity", "order-7")]


def test_a_record_without_a_key_is_rejected_saying_how_to_publish_it():
    host = TestHost()
    with pytest.raises(Reject, match="no ordering key.*--key"):
        host.handle(AuditLog, Message.new("audit.record", {"actor": "ana", "action": "pack"}))
    assert host.published == [] and host.state_value("seq:order-7") is None


def test_incomplete_or_malformed_records_are_rejected():
    host = TestHost()
    with pytest.raises(Reject, match="has no action"):
        host.handle(AuditLog, record("order-7", actor="ana"))
    with pytest.raises(Reject, match="JSON object"):
        host.handle(AuditLog, Message.new("audit.record", [1, 2], key="order-7"))
    with pytest.raises(Reject, match="not valid JSON"):
        host.handle(AuditLog, Message("1", "audit.record", "inbox:test", payload=b"{nope", key="o"))
    assert host.published == []


def test_a_note_that_is_not_text_is_an_uncaught_error_and_keeps_nothing():
    host = TestHost()
    with pytest.raises(TypeError):
        host.handle(AuditLog, record("order-7", actor="ana", action="pack", note=5))
    assert host.published == [] and host.state_value("seq:order-7") is None


def test_a_request_for_an_entity_s_entries_is_answered():
    host = TestHost()
    host.handle(AuditLog, Message.new("audit.record", {"actor": "ana", "action": "refund"}, key="order-7"))
    host.request(AuditLog, Message.new("audit.entries", {"entity": "order-7"}))
    host.request(AuditLog, Message.new("audit.entries", {"entity": "order-8"}))
    answers = [r.json() for r in host.replies]
    assert answers[0]["entries"] == 1 and answers[0]["last"]["action"] == "refund"
    assert answers[1] == {"entity": "order-8", "entries": 0, "last": None}
    with pytest.raises(Reject, match="asks for"):
        host.request(AuditLog, Message.new("audit.entries", {}))
