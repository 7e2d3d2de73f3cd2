"""Publishing messages, delivered once the current message is handled successfully."""

import json
from typing import Any, Dict, Optional

from . import host
from .errors import Reject


def _encode(payload: Any) -> bytes:
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    try:
        return json.dumps(payload).encode()
    except (TypeError, ValueError) as e:
        raise Reject(f"cannot encode payload: {e}") from e


def _headers(headers: Optional[Dict[str, str]]):
    return sorted((headers or {}).items())


def publish(queue: str, kind: str, payload: Any, headers: Optional[Dict[str, str]] = None) -> str:
    """Publish a message to an inbox queue (``payload``: JSON-encoded unless ``bytes``);
    it is delivered once the current message is handled successfully. Returns the new
    message's id. A queue or kind the host does not accept raises :class:`Reject`;
    publishing more than the host allows one call ends the call (rejected)."""
    return host.current().publish(host.Queue(queue), kind, _headers(headers), _encode(payload))


def publish_to_exchange(
    exchange: str,
    routing_key: str,
    kind: str,
    payload: Any,
    headers: Optional[Dict[str, str]] = None,
) -> str:
    """Publish a message to an AMQP exchange through the outbox relay."""
    destination = host.Exchange((exchange, routing_key))
    return host.current().publish(destination, kind, _headers(headers), _encode(payload))
