"""noop: the bench's Python handler that does nothing, to weigh the interpreter's cost
per message against the Rust fixture of the same name."""

from wharf_sdk import Manifest, Message, Plugin, export


class Noop(Plugin):
    def manifest(self) -> Manifest:
        return Manifest("noop-python", "1.0.0").subscribe("bench.noop")

    def handle(self, message: Message) -> None:
        pass


WitWorld = export(Noop)
