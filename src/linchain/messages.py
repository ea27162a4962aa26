"""How error messages repeat a user's value: named, never echoed whole (a value can be a whole file's worth).
Kept below every other module so the library and the command line share it."""

from __future__ import annotations

__all__ = ["ECHO_LIMIT", "bounded"]

#: how much of a user's value an error message repeats
ECHO_LIMIT = 200


def bounded(text: object, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"
