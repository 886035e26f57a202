"""A problem found in tenant input: what a user needs to fix it, nothing more."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

REDACTED = "<redacted>"


@dataclass(frozen=True, order=True)
class Problem:
    """One actionable error: where (file, line, field path), what (value), why and how to fix."""

    file: str
    field: str  # dotted path, e.g. "origin.url" or "cache.rules[1].ttl"; "" = the whole file
    reason: str
    fix: str
    value: str | None = None  # repr of the offending value, secrets redacted
    line: int | None = None

    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def render(self) -> str:
        where = self.location() + (f": {self.field}" if self.field else "")
        value = f" (value: {self.value})" if self.value is not None else ""
        return f"{where}: {self.reason}{value}. Fix: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def show_value(value: Any, limit: int = 80) -> str:
    """Short, single-line repr of a user value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_path(loc: tuple[str | int, ...]) -> str:
    """('cache', 'rules', 1, 'ttl') -> 'cache.rules[1].ttl'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class InputError(ValueError):
    """Raised by validators: carries the reason and the fix separately."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(f"{reason}. Fix: {fix}")
        self.reason = reason
        self.fix = fix
