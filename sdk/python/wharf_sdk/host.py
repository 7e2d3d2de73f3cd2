"""Where the package's calls go: the wharf host's imports inside a component
(:mod:`wharf_sdk.component`), or the :class:`wharf_sdk.testing.TestHost` a test
installed. Plugin authors do not need this."""

from typing import Callable, List, Optional, Protocol, Tuple, Union


class Queue(str):
    """A publish destination: an inbox queue."""


class Exchange(tuple):
    """A publish destination: an AMQP exchange and routing key."""


class Topic(str):
    """A publish destination: a Kafka topic (the publish's key is the record's key)."""


Destination = Union[Queue, Exchange, Topic]


class Host(Protocol):
    """What a handler can ask of its host."""

    def log(self, level: str, message: str, fields: List[Tuple[str, str]]) -> None: ...

    def publish(
        self,
        destination: Destination,
        kind: str,
        headers: List[Tuple[str, str]],
        payload: bytes,
        key: Optional[str],
    ) -> str:
        """The new message's id; raises :class:`wharf_sdk.Reject` when refused."""
        ...

    def reply(self, payload: bytes, headers: List[Tuple[str, str]]) -> None:
        """Answer the request being handled; raises :class:`wharf_sdk.Reject` when
        refused."""
        ...

    def state_get(self, key: str) -> Optional[bytes]: ...

    def state_set(self, key: str, value: bytes) -> None: ...

    def state_delete(self, key: str) -> None: ...

    def config_get(self, key: str) -> Optional[str]: ...

    def http_send(self, request: "Request") -> "Response":
        """One exchange (no redirects followed); raises :class:`wharf_sdk.http.HttpError`
        when there is no response."""
        ...


_installed: Optional[Host] = None
_default: Optional[Callable[[], Host]] = None


def current() -> Host:
    """The host of the call in progress: the one installed, else the default's."""
    if _installed is not None:
        return _installed
    if _default is None:
        raise RuntimeError("wharf_sdk has no host: import wharf_sdk, not its modules alone")
    return _default()


def by_default(host: Callable[[], Host]) -> None:
    """Where calls go when no host is installed (:mod:`wharf_sdk.component` sets its
    imports)."""
    global _default
    _default = host


def install(host: Optional[Host]) -> Optional[Host]:
    """Send calls to ``host`` (``None``: the component's imports); returns the previous."""
    global _installed
    previous, _installed = _installed, host
    return previous

