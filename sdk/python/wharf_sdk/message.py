"""The message a handler receives, with JSON decoding and idempotency keys."""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from . import host as _host
from .errors import Reject


@dataclass(frozen=True)
class Message:
    """One message delivered to a handler."""

    id: str
    """Unique id, stable across retries: a good idempotency key."""
    kind: str
    """What the message is about, e.g. ``order.created``."""
    source: str
    """Where it came from, e.g. ``inbox:orders``."""
    headers: List[Tuple[str, str]] = field(default_factory=list)
    """Producer-supplied headers."""
    payload: bytes = b""
    """The raw body, usually JSON."""
    attempt: int = 1
    """1 on the first attempt."""
    key: Optional[str] = None
    """The ordering key the producer gave it, if any."""

    @classmethod
    def new(cls, kind: str, payload: Any, key: Optional[str] = None) -> "Message":
        """A first-attempt message with a JSON payload (and an ordering key), for tests."""
        return cls(
            id="00000000-0000-7000-8000-000000000001",
            kind=kind,
            source="inbox:test",
            payload=json.dumps(payload).encode(),
            key=key,
        )

    def json(self) -> Any:
        """The payload decoded as JSON. A payload that does not decode raises
        :class:`Reject`: retrying would not make it decode."""
        try:
            return json.loads(self.payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise Reject(f"payload of {self.kind} message {self.id} is not valid JSON: {e}") from e

    def header(self, key: str) -> Optional[str]:
        """The value of a header, if present."""
        return next((v for k, v in self.headers if k == key), None)

    def idempotency_key(self, label: str) -> str:
        """A key for an effect outside the host, from the message id and a label naming
        the effect (``"charge-card"``): the same for every retry and redelivery, and the
        same as the Rust SDK's."""
        digest = hashlib.sha256(self.id.encode() + b"\0" + label.encode()).digest()
        return digest[:16].hex()

    def reply(self, body: Any) -> None:
        """Answer this message, a request, with a JSON body (header ``content-type:
        application/json``). The answer is sent once, when the message is handled: a
        retried or redelivered request answers once, a failed call not at all. Raises
        :class:`Reject` when the message is not a request, when the call answered
        already, or when the host refuses a header."""
        self.reply_bytes(json.dumps(body).encode(), [("content-type", "application/json")])

    def reply_bytes(self, payload: bytes, headers: Optional[List[Tuple[str, str]]] = None) -> None:
        """Answer this message, a request, with a raw body and ``headers`` (see
        :meth:`reply`)."""
        _host.current().reply(bytes(payload), list(headers or []))
