"""Logging into the host's tracing, tagged with the message id, plugin and trace ids."""

from typing import Dict, Optional

from . import host

LEVELS = ("trace", "debug", "info", "warn", "error")


def log(level: str, message: str, fields: Optional[Dict[str, str]] = None) -> None:
    """Log at ``level`` (one of :data:`LEVELS`) with structured fields."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    host.current().log(level, message, sorted((fields or {}).items()))


def debug(message: str, **fields: str) -> None:
    """Log at debug level."""
    log("debug", message, fields)


def info(message: str, **fields: str) -> None:
    """Log at info level."""
    log("info", message, fields)


def warn(message: str, **fields: str) -> None:
    """Log at warn level."""
    log("warn", message, fields)


def error(message: str, **fields: str) -> None:
    """Log at error level."""
    log("error", message, fields)
