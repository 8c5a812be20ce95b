"""Go-style durations (``500ms``, ``10m``, ``1h30m``), as the CRD schemas accept them, and
``Duration``, the typed value a parsed spec holds for each of them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvtrace_operator.spec.errors import SpecError

# Same grammar as the CRD pattern; CEL's duration() accepts exactly these units.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_NANOS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_EXPECTED = "expected a duration such as 500ms, 10s, 5m or 1h30m"


def _nanos(value: object, field: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(DURATION_PATTERN, value):
        raise SpecError(field, f"{_EXPECTED}, got {value!r}")
    return sum(round(float(number) * _NANOS[unit]) for number, unit in _PART.findall(value))


def parse_duration(value: object, field: str, minimum: str | None = None) -> int:
    """Nanoseconds of a positive duration string (at least ``minimum`` when given, like the
    CRD's CEL rule); SpecError naming ``field`` otherwise."""
    nanos = _nanos(value, field)
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


@dataclass(frozen=True)
class Duration:
    """A duration field of a spec: ``text`` as written (what configs and flags repeat),
    ``nanos`` its length, ``field`` its path (for the errors of checks made later)."""

    text: str
    nanos: int
    field: str

    @classmethod
    def parse(cls, value: object, field: str) -> Duration:
        """SpecError naming ``field`` unless ``value`` is a duration string (zero allowed:
        the minimums are the validator's, ``render.validate``)."""
        return cls(str(value), _nanos(value, field), field)

    @property
    def ms(self) -> int:
        """Whole milliseconds (at least 1)."""
        return max(1, self.nanos // 1_000_000)

    @property
    def seconds(self) -> float:
        return self.nanos / 1e9

    def __str__(self) -> str:
        return self.text
