"""The plugin's self-description: name, version, subscriptions, retry policy, limits, the
hosts it asks to call, and whether it handles the messages of a key in order."""

import math
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import List, Optional, Union


_MAX_MS = 2**64 - 1


def _ms(value: Union[None, float, timedelta], what: str = "a duration") -> Optional[int]:
    """Seconds (or a ``timedelta``) as whole milliseconds, at most 2**64 - 1 (what the
    host takes; an infinite or huge one is that). Not a number, NaN or negative: an error
    naming ``what``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} is seconds (a number) or a timedelta, not {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be a number of seconds >= 0, not {value}")
    if math.isinf(value):
        return _MAX_MS
    return min(_MAX_MS, round(value * 1000))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base_delay * multiplier ** (retry - 1)``, capped at
    ``max_delay``, spread by ``jitter`` (0.0-1.0). Delays in seconds or ``timedelta``."""

    max_retries: int
    base_delay: Union[float, timedelta] = 1.0
    multiplier: float = 2.0
    max_delay: Union[float, timedelta] = 300.0
    jitter: float = 0.2


@dataclass(frozen=True)
class Limits:
    """Resources one call may use; ``None`` takes the host's default, and the host's
    ``[runtime]`` settings are the most a plugin may ask for. A Python plugin carries an
    interpreter: it needs a larger memory cap than a Rust one (see wharf's README)."""

    memory_mib: Optional[int] = None
    deadline: Union[None, float, timedelta] = None
    fuel: Optional[int] = None
    max_concurrency: Optional[int] = None


@dataclass(frozen=True)
class Manifest:
    """What the host learns about a plugin when it loads it."""

    name: str
    version: str
    subscriptions: List[str] = field(default_factory=list)
    retry_policy: Optional[RetryPolicy] = None
    resource_limits: Optional[Limits] = None
    allowed_hosts: List[str] = field(default_factory=list)
    keeps_order: bool = False

    def subscribe(self, pattern: str) -> "Manifest":
        """Also receive kinds matching ``pattern`` (``*`` one word, ``#`` any words)."""
        return replace(self, subscriptions=[*self.subscriptions, pattern])

    def retry(self, policy: RetryPolicy) -> "Manifest":
        """The plugin's default retry policy; operator config may override it."""
        return replace(self, retry_policy=policy)

    def limits(self, limits: Limits) -> "Manifest":
        """The resources the plugin asks for; operator config may override them."""
        return replace(self, resource_limits=limits)

    def calls(self, hosts: str) -> "Manifest":
        """Ask to call ``hosts`` (``scheme://host[:port]``, ``*`` and ``*.domain``
        patterns). Asking grants nothing: the operator grants them in
        ``[plugin.<name>] allowed_hosts``, and the host says when it loads the plugin
        which of them are not granted."""
        return replace(self, allowed_hosts=[*self.allowed_hosts, hosts])

    def ordered(self) -> "Manifest":
        """Ask for the messages of one ordering key one at a time, in the order they
        were published, across the fleet: a key's next message waits until this plugin
        handled the one before it (or, after a dead letter, until an operator releases
        the key). Messages without a key are not ordered. The operator's
        ``[plugin.<name>] ordered`` overrides it."""
        return replace(self, keeps_order=True)
