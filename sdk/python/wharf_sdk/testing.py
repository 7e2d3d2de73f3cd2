"""A test harness: run a handler's logic under pytest, without wasm, against an
in-memory host that behaves like wharf's: effects are buffered during the call and kept
only when ``handle`` returns.

    host = TestHost().config("threshold", "5")
    host.handle(UpdateStock, Message.new("order.created", {"sku": "A1"}))
    assert len(host.published) == 1
"""

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Type, Union

from . import host as _host
from .errors import Reject
from .http import HttpError, Request, Response
from .message import Message
from .plugin import Plugin

Queue = _host.Queue
Exchange = _host.Exchange
Topic = _host.Topic


@dataclass(frozen=True)
class Published:
    """A message the handler published."""

    destination: _host.Destination
    """``Queue(name)``, ``Exchange((exchange, routing_key))`` or ``Topic(name)``."""
    kind: str
    headers: List[Tuple[str, str]]
    payload: bytes
    key: Optional[str] = None
    """Its ordering key."""

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.payload)


@dataclass(frozen=True)
class Reply:
    """The answer a handler gave to a request."""

    headers: List[Tuple[str, str]]
    payload: bytes

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.payload)


@dataclass(frozen=True)
class LogLine:
    """A log line the handler wrote."""

    level: str
    message: str
    fields: List[Tuple[str, str]]


@dataclass
class TestHost:
    """An in-memory wharf host."""

    __test__ = False  # not a pytest test class

    _config: Dict[str, str] = field(default_factory=dict)
    _state: Dict[str, bytes] = field(default_factory=dict)
    published: List[Published] = field(default_factory=list)
    """Messages published by calls that returned."""
    logs: List[LogLine] = field(default_factory=list)
    """Every log line, including those of failed calls."""
    requests: List[Request] = field(default_factory=list)
    """Every HTTP request sent, including those of failed calls."""
    replies: List[Reply] = field(default_factory=list)
    """Answers of calls to requests (:meth:`request`) that returned."""
    _answers: List[Tuple[str, str, Response]] = field(default_factory=list)
    _writes: Dict[str, Optional[bytes]] = field(default_factory=dict)
    _publishing: List[Published] = field(default_factory=list)
    _next_id: int = 0
    _asked: bool = False
    _answer: Optional[Reply] = None

    def config(self, key: str, value: str) -> "TestHost":
        """Set a config value the plugin can read."""
        self._config[key] = value
        return self

    def respond(self, method: str, url: str, status: int, body: bytes = b"") -> "TestHost":
        """Answer every ``method`` request to ``url`` (exactly as the handler writes it)
        with ``status`` and ``body``; a request without an answer fails as an unreachable
        host would."""
        self._answers.append((method, url, Response(status, [], bytes(body))))
        return self

    def state(self, key: str, value: Union[bytes, Any]) -> "TestHost":
        """Seed a committed state value (``bytes``, else JSON-encoded)."""
        self._state[key] = value if isinstance(value, bytes) else json.dumps(value).encode()
        return self

    def handle(self, plugin: Type[Plugin], message: Message) -> None:
        """Run ``plugin().handle(message)``. When it returns, the call's state writes and
        publishes are committed; when it raises, they are discarded, as the real host
        does, and the exception reaches the test."""
        self._run(plugin, message, False)

    def request(self, plugin: Type[Plugin], message: Message) -> None:
        """Run ``plugin().handle(message)`` with the message sent as a request: as
        :meth:`handle`, and the answer of a call that returns is kept (:attr:`replies`)."""
        self._run(plugin, message, True)

    def _run(self, plugin: Type[Plugin], message: Message, asked: bool) -> None:
        self._writes, self._publishing = {}, []
        self._asked, self._answer = asked, None
        previous = _host.install(self)
        try:
            plugin().handle(message)
        finally:
            _host.install(previous)
            writes, publishing, answer = self._writes, self._publishing, self._answer
            self._writes, self._publishing = {}, []
            self._asked, self._answer = False, None
        for key, value in writes.items():
            if value is None:
                self._state.pop(key, None)
            else:
                self._state[key] = value
        self.published.extend(publishing)
        if answer is not None:
            self.replies.append(answer)

    def state_value(self, key: str) -> Optional[bytes]:
        """Committed state value."""
        return self._state.get(key)

    def state_json(self, key: str) -> Any:
        """Committed state value decoded as JSON (``None`` when absent)."""
        raw = self._state.get(key)
        return None if raw is None else json.loads(raw)

    # The host functions the package calls while a call is in progress.

    def log(self, level, message, fields):
        self.logs.append(LogLine(level, message, list(fields)))

    def publish(self, destination, kind, headers, payload, key):
        if not kind:
            raise Reject("cannot publish: the kind is empty")
        if isinstance(destination, Queue) and not destination:
            raise Reject(f"cannot publish {kind}: the queue is empty")
        if isinstance(destination, Topic) and not destination:
            raise Reject(f"cannot publish {kind}: the topic is empty")
        self._next_id += 1
        if key is not None and not key:
            raise Reject(f"cannot publish {kind}: the key is empty")
        self._publishing.append(Published(destination, kind, list(headers), bytes(payload), key))
        return f"00000000-0000-7000-8000-{self._next_id:012x}"

    def reply(self, payload, headers):
        if not self._asked:
            raise Reject("cannot answer: this message is not a request: no one waits for an answer")
        if self._answer is not None:
            raise Reject("cannot answer: this call answered the request already")
        self._answer = Reply(list(headers), bytes(payload))

    def state_get(self, key):
        if key in self._writes:
            return self._writes[key]
        return self._state.get(key)

    def state_set(self, key, value):
        self._writes[key] = bytes(value)

    def state_delete(self, key):
        self._writes[key] = None

    def config_get(self, key):
        return self._config.get(key)

    def http_send(self, request):
        self.requests.append(request)
        for method, url, response in self._answers:
            if method == request.method and url == request.url:
                return response
        raise HttpError(
            f"TestHost has no answer for {request.method} {request.url}; give one with TestHost.respond"
        )
