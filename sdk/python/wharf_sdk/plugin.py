"""The handler base class."""

from .manifest import Manifest
from .message import Message


class Plugin:
    """A message handler. Subclass it, implement both methods, and export the subclass
    with :func:`wharf_sdk.export`. The host makes a new instance for every call."""

    def manifest(self) -> Manifest:
        """Name, version and subscriptions; read once when the host loads the plugin."""
        raise NotImplementedError(f"{type(self).__name__} does not define manifest()")

    def handle(self, message: Message) -> None:
        """Handle one message. Raise :class:`wharf_sdk.Retry` for a transient failure
        and :class:`wharf_sdk.Reject` for a permanent one."""
        raise NotImplementedError(f"{type(self).__name__} does not define handle()")
