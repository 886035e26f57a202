"""Durations in tenant files: integers (seconds) or strings like 30s, 5m, 1h, 7d."""

from __future__ import annotations

import re

from cdnctl.tenants.problems import InputError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^(\d{1,9})([smhd])$")


def parse_duration(value: object, *, maximum: int, minimum: int = 0) -> int:
    """Return whole seconds, or raise InputError saying what form is accepted."""
    if isinstance(value, bool):
        raise InputError(
            "a duration must be seconds or a string like 30s, 5m, 1h, 7d, not a boolean",
            "write e.g. 300 or 5m",
        )
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        match = _PATTERN.match(value.strip())
        if not match:
            raise InputError(
                "not a duration", "write whole seconds (300) or a number with s, m, h or d (5m)"
            )
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise InputError("a duration must be an integer or a string", "write e.g. 300 or 5m")
    if seconds < minimum:
        raise InputError(
            f"must be at least {format_duration(minimum)}" if minimum else "must not be negative",
            f"use a value between {format_duration(minimum)} and {format_duration(maximum)}",
        )
    if seconds > maximum:
        raise InputError(
            f"longer than the maximum of {format_duration(maximum)}",
            f"use a value between {format_duration(minimum)} and {format_duration(maximum)}",
        )
    return seconds


def format_duration(seconds: int) -> str:
    """Largest exact unit: 86400 -> '1d', 90 -> '90s'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
