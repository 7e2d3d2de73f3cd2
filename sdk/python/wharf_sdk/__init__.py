"""wharf-sdk for Python: write wharf message handlers in Python.

A plugin is a subclass of :class:`Plugin`, exported as the component's world with
:func:`export`, and built into a ``.wasm`` component with componentize-py::

    from wharf_sdk import Manifest, Message, Plugin, export, log

    class Hello(Plugin):
        def manifest(self) -> Manifest:
            return Manifest("hello", "1.0.0").subscribe("greeting.*")

        def handle(self, message: Message) -> None:
            log.info(f"hello from {message.id}")

    WitWorld = export(Hello)

The host calls ``handle`` once per message in a fresh sandbox. Everything the handler does
through this package (:func:`publish`, :mod:`state`, :mod:`log`) is buffered by the host
and committed only if ``handle`` returns, in the same transaction that marks the message
handled. Raise :class:`Retry` for a transient failure and :class:`Reject` for a permanent
one; any other exception ends the call like a Rust panic (a failed attempt, retried by
the host's policy).

Unit-test the logic with pytest, without wasm, with :class:`wharf_sdk.testing.TestHost`.
"""

from . import config, log, state
from .errors import Reject, Retry
from .component import export
from .manifest import Limits, Manifest, RetryPolicy
from .message import Message
from .plugin import Plugin
from .publish import publish, publish_to_exchange, publish_to_topic

__all__ = [
    "Limits",
    "Manifest",
    "Message",
    "Plugin",
    "Reject",
    "Retry",
    "RetryPolicy",
    "config",
    "export",
    "log",
    "publish",
    "publish_to_exchange",
    "publish_to_topic",
    "state",
]
