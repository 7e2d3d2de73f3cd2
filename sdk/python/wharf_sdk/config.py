"""Values the operator configured for this plugin (``[plugins.config.<name>]``)."""

from typing import Callable, Optional, TypeVar

from . import host
from .errors import Reject

T = TypeVar("T")


def get(key: str) -> Optional[str]:
    """Read a config value; ``None`` when absent."""
    return host.current().config_get(key)


def get_or(key: str, default: T, parse: Optional[Callable[[str], T]] = None) -> T:
    """Read and parse a config value (with ``parse``, else the type of ``default``),
    ``default`` when absent. A value that does not parse raises :class:`Reject` naming
    the key."""
    raw = get(key)
    if raw is None:
        return default
    parse = parse or type(default)
    try:
        return parse(raw)
    except (TypeError, ValueError) as e:
        raise Reject(f"config key {key!r} = {raw!r}: {e}") from e
