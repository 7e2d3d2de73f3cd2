"""Calling other services from a handler: a small blocking HTTP client over the standard
``wasi:http`` interface (the plugin is built against the ``plugin-http`` world). The host
sends only to the hosts its operator granted the plugin (``[plugin.<name>] allowed_hosts``),
within the call's deadline and limits; a refusal is an :class:`HttpError` naming the rule.

A call to another service is at least once: a message is retried after a timeout or a
crash, and its call is made again. Give each effect an idempotency key
(:meth:`Request.idempotency_key`: the same on every retry of the message) and a service
that honours ``Idempotency-Key`` applies it once::

    from wharf_sdk.http import Request

    response = (
        Request.post("https://api.mail.example/v1/send")
        .json({"to": "ada@example.com"})
        .idempotency_key(message, "send-email")
        .send()
    )

Redirects (301, 302, 303, 307, 308) are followed up to :data:`MAX_REDIRECTS` times, each
checked by the host like the first request. :class:`HttpError` is a :class:`Retry`: left
uncaught, the message is tried again.
"""

import json as _json
from dataclasses import dataclass, field, replace
from typing import Any, List, Optional, Tuple

from . import host as _host
from .errors import Retry
from .message import Message

MAX_REDIRECTS = 5
"""How many redirects one :meth:`Request.send` follows."""


class HttpError(Retry):
    """A request got no response: refused by the host (not granted, a limit), or the
    connection failed or timed out."""

    def __init__(self, reason: str):
        super().__init__(f"HTTP request failed: {reason}")


@dataclass(frozen=True)
class Response:
    """A response, read whole (within the host's ``max_http_response_bytes``)."""

    status: int
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (any case)."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def text(self) -> str:
        """The body as text (invalid UTF-8 replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded from JSON."""
        return _json.loads(self.body)


@dataclass(frozen=True)
class Request:
    """An HTTP request to send."""

    method: str
    url: str
    headers: Tuple[Tuple[str, str], ...] = ()
    body: bytes = b""

    @staticmethod
    def get(url: str) -> "Request":
        return Request("GET", url)

    @staticmethod
    def post(url: str) -> "Request":
        return Request("POST", url)

    @staticmethod
    def put(url: str) -> "Request":
        return Request("PUT", url)

    @staticmethod
    def delete(url: str) -> "Request":
        return Request("DELETE", url)

    def header(self, name: str, value: str) -> "Request":
        """This request with one more header."""
        return replace(self, headers=self.headers + ((name, value),))

    def with_body(self, body: bytes) -> "Request":
        """This request with ``body`` as it is."""
        return replace(self, body=bytes(body))

    def json(self, value: Any) -> "Request":
        """This request sending ``value`` as JSON (``Content-Type: application/json``)."""
        return self.header("content-type", "application/json").with_body(
            _json.dumps(value).encode()
        )

    def idempotency_key(self, message: Message, label: str) -> "Request":
        """Set ``Idempotency-Key`` to ``message.idempotency_key(label)``: the same for every
        attempt of this message, so a service that honours it applies the effect once."""
        return self.header("idempotency-key", message.idempotency_key(label))

    def send(self) -> Response:
        """Send it and read the response, following redirects."""
        request = self
        for _ in range(MAX_REDIRECTS + 1):
            response = _host.current().http_send(request)
            following = request._redirected(response)
            if following is None:
                return response
            request = following
        raise HttpError(f"more than {MAX_REDIRECTS} redirects, the last to {request.url}")

    def _redirected(self, response: Response) -> Optional["Request"]:
        if response.status not in (301, 302, 303, 307, 308):
            return None
        location = response.header("location")
        if location is None:
            return None
        if location.startswith(("http://", "https://")):
            url = location
        elif location.startswith("/") and not location.startswith("//"):
            scheme, authority, _ = split_url(self.url)
            url = f"{scheme}://{authority}{location}"
        else:
            raise HttpError(f"a redirect to {location!r}, which is neither a URL nor an absolute path")
        if response.status in (307, 308) or self.method == "HEAD":
            return replace(self, url=url)
        headers = tuple((k, v) for k, v in self.headers if k.lower() != "content-type")
        return Request("GET", url, headers)


def split_url(url: str) -> Tuple[str, str, str]:
    """``(scheme, authority, path_and_query)`` of an http(s) URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise HttpError(f"{url!r} is not an http(s) URL: no scheme")
    if scheme not in ("http", "https"):
        raise HttpError(f"{url!r} is not an http(s) URL: the scheme must be http or https")
    rest = rest.split("#", 1)[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:] or "/"
    if not authority:
        raise HttpError(f"{url!r} is not an http(s) URL: no host")
    return scheme, authority, path
