"""Key/value state private to this plugin, committed with the message's outcome.

Reads see committed state plus this call's own writes. The host limits what one call may
read and write and what a plugin may hold in all; going over a limit ends the call and
rejects the message, naming the setting an operator can raise."""

import json
from typing import Any, Optional

from . import host
from .errors import Reject


def get(key: str) -> Optional[bytes]:
    """Read a raw value; ``None`` when absent."""
    return host.current().state_get(key)


def set(key: str, value: bytes) -> None:
    """Write a raw value."""
    host.current().state_set(key, bytes(value))


def delete(key: str) -> None:
    """Remove a value."""
    host.current().state_delete(key)


def get_json(key: str, default: Any = None) -> Any:
    """Read a JSON value; ``default`` when absent, :class:`Reject` when it does not
    decode."""
    raw = get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise Reject(f"state key {key!r} does not decode: {e}") from e


def set_json(key: str, value: Any) -> None:
    """Write a JSON value."""
    set(key, json.dumps(value).encode())
