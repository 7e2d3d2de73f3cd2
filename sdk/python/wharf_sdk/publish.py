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


def publish(
    queue: str,
    kind: str,
    payload: Any,
    headers: Optional[Dict[str, str]] = None,
    key: Optional[str] = None,
) -> str:
    """Publish a message to an inbox queue (``payload``: JSON-encoded unless ``bytes``);
    it is delivered once the current message is handled successfully. Returns the new
    message's id. ``key`` is its ordering key: the messages a handler publishes with one
    key to one queue keep the order it published them in, for the plugins that handle
    keys in order. A queue, kind or key the host does not accept raises :class:`Reject`;
    publishing more than the host allows one call ends the call (rejected)."""
    destination = host.Queue(queue)
    return host.current().publish(destination, kind, _headers(headers), _encode(payload), key)


def publish_to_exchange(
    exchange: str,
    routing_key: str,
    kind: str,
    payload: Any,
    headers: Optional[Dict[str, str]] = None,
    key: Optional[str] = None,
) -> str:
    """Publish a message to an AMQP exchange through the outbox relay; its ``key``
    travels in the ``partition_key`` header."""
    destination = host.Exchange((exchange, routing_key))
    return host.current().publish(destination, kind, _headers(headers), _encode(payload), key)


def publish_to_topic(
    topic: str,
    key: Optional[str],
    kind: str,
    payload: Any,
    headers: Optional[Dict[str, str]] = None,
) -> str:
    """Publish a record to a Kafka topic through the outbox relay's idempotent producer:
    ``key`` is the record's key (so its partition: the records of one key keep their
    order), its id and kind travel in the ``message-id`` and ``kind`` headers."""
    destination = host.Topic(topic)
    return host.current().publish(destination, kind, _headers(headers), _encode(payload), key)
