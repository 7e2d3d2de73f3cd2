"""The webhook's logic under pytest, without wasm or network (TestHost answers)."""

import pytest
from app import NotifyWebhook

from wharf_sdk import Message, Reject, Retry
from wharf_sdk.http import HttpError
from wharf_sdk.testing import TestHost

URL = "https://partner.test/hooks/shipped"


def shipped():
    return Message.new("order.shipped", {"order": "o-7", "carrier": "ups"})


def test_posts_the_order_with_the_message_idempotency_key():
    host = TestHost().config("webhook_url", URL).respond("POST", URL, 204)
    message = shipped()
    host.handle(NotifyWebhook, message)
    (sent,) = host.requests
    assert ("idempotency-key", message.idempotency_key("notify")) in sent.headers
    assert sent.body == b'{"order": "o-7", "carrier": "ups"}'


@pytest.mark.parametrize("status, raised", [(503, Retry), (429, Retry), (400, Reject)])
def test_a_failing_webhook_is_retried_and_a_refusal_rejected(status, raised):
    host = TestHost().config("webhook_url", URL).respond("POST", URL, status)
    with pytest.raises(raised):
        host.handle(NotifyWebhook, shipped())


def test_an_unreachable_webhook_is_retried():
    host = TestHost().config("webhook_url", URL)
    with pytest.raises(HttpError, match="no answer for POST"):
        host.handle(NotifyWebhook, shipped())
    assert isinstance(HttpError("x"), Retry)


def test_no_webhook_configured_is_rejected():
    with pytest.raises(Reject, match="webhook_url"):
        TestHost().handle(NotifyWebhook, shipped())
