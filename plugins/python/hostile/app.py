"""hostile: a Python handler that fails the ways an operator must be able to read, for the
host's tests: an uncaught exception, an exit instead of a return, a retry hint far beyond
any policy."""

import sys

from wharf_sdk import Manifest, Message, Plugin, Retry, export


class Hostile(Plugin):
    def manifest(self) -> Manifest:
        return Manifest("hostile-python", "1.0.0").subscribe("hostile.*")

    def handle(self, message: Message) -> None:
        if message.kind == "hostile.raise":
            raise KeyError("missing")
        if message.kind == "hostile.exit":
            sys.exit(3)  # WASI carries success or failure: the host sees status 1
        if message.kind == "hostile.far-retry":
            raise Retry("later", delay=1e30)


WitWorld = export(Hostile)
