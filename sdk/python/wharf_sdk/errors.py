"""How a handler says it did not succeed: retry (transient) or reject (permanent)."""

from datetime import timedelta
from typing import Optional, Union

from .manifest import _ms


class Retry(Exception):
    """A transient failure: the host tries again later, with exponential backoff, until
    the retry policy is exhausted. ``delay`` (seconds or a ``timedelta``) overrides the
    backoff: the next attempt comes no sooner, and no later than the policy's
    ``max_delay`` (the host caps it). A delay that is not a number, NaN or negative raises
    at once."""

    def __init__(self, reason: str, delay: Union[None, float, timedelta] = None):
        super().__init__(reason)
        self.reason = reason
        self.delay_ms: Optional[int] = _ms(delay, "a retry delay")

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
