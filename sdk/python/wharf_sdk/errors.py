"""How a handler says it did not succeed: retry (transient) or reject (permanent)."""

from datetime import timedelta
from typing import Optional, Union


class Retry(Exception):
    """A transient failure: the host tries again later, with exponential backoff, until
    the retry policy is exhausted. ``delay`` (seconds or a ``timedelta``) overrides the
    backoff: the next attempt comes no sooner."""

    def __init__(self, reason: str, delay: Union[None, float, timedelta] = None):
        super().__init__(reason)
        self.reason = reason
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if delay is not None and delay < 0:
            raise ValueError(f"a retry delay cannot be negative: {delay}")
        self.delay_ms: Optional[int] = None if delay is None else round(delay * 1000)

    def __str__(self) -> str:
        if self.delay_ms is None:
            return f"retry: {self.reason}"
        return f"retry after {self.delay_ms} ms: {self.reason}"


class Reject(Exception):
    """A permanent failure: no retry, the message goes straight to the failed messages
    (dead letters) with this reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"reject: {self.reason}"
