"""Go-style durations (``500ms``, ``10m``, ``1h30m``), as the CRD schemas accept them."""

from __future__ import annotations

import re

from kvtrace_operator.render.errors import SpecError

# Same grammar as the CRD pattern; CEL's duration() accepts exactly these units.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(value: object, field: str, minimum: str | None = None) -> int:
    """Nanoseconds of a positive duration string (at least ``minimum`` when given, like the
    CRD's CEL rule); SpecError naming ``field`` otherwise."""
    if not isinstance(value, str) or not re.fullmatch(DURATION_PATTERN, value):
        raise SpecError(
            field, f"expected a duration such as 500ms, 10s, 5m or 1h30m, got {value!r}"
        )
    nanos = sum(round(float(number) * _NANOS[unit]) for number, unit in _PART.findall(value))
    if nanos <= 0:
        raise SpecError(field, f"expected a positive duration, got {value!r}")
    if minimum is not None and nanos < parse_duration(minimum, field):
        raise SpecError(field, f"expected a duration of at least {minimum}, got {value!r}")
    return nanos


def duration_ms(value: object, field: str) -> int:
    """Whole milliseconds of a duration (at least 1)."""
    return max(1, parse_duration(value, field) // 1_000_000)


_SIMPLE = re.compile(r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$")


def single_unit(value: str, field: str) -> str:
    """``value`` with one unit of ms, s, m or h, the forms the KV node's flags accept:
    ``1h30m`` becomes ``5400s``, ``1500000us`` becomes ``1500ms``."""
    if _SIMPLE.match(value):
        return value
    nanos = parse_duration(value, field)
    if nanos % 10**9 == 0:
        return f"{nanos // 10**9}s"
    return f"{-(-nanos // 10**6)}ms"  # whole milliseconds, rounded up
