"""Test-only fault injection (off unless `--faults`/`KVNODE_FAULTS` is set). Pure parsing.

Spec: comma-separated rules, `error:PREFIX` (operations on keys starting with PREFIX fail
with HTTP 500 and an ERROR span) and `delay:PREFIX:DURATION` (they are slowed down by
DURATION, e.g. `300ms`). Used to prove that tail sampling keeps error and slow traces.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvnode.units import parse_duration


@dataclass(frozen=True)
class Fault:
    kind: str  # "error" or "delay"
    prefix: bytes
    delay: float = 0.0


def parse_faults(spec: str | None) -> tuple[Fault, ...]:
    faults = []
    for rule in (spec or "").split(","):
        rule = rule.strip()
        if not rule:
            continue
        kind, _, rest = rule.partition(":")
        if kind == "error" and rest:
            faults.append(Fault("error", rest.encode()))
        elif kind == "delay":
            prefix, _, duration = rest.rpartition(":")
            if not prefix:
                raise ValueError(f"fault {rule!r}: expected delay:PREFIX:DURATION")
            faults.append(Fault("delay", prefix.encode(), parse_duration(duration)))
        else:
            raise ValueError(f"fault {rule!r}: expected error:PREFIX or delay:PREFIX:DURATION")
    return tuple(faults)


def match(faults: tuple[Fault, ...], key: bytes) -> Fault | None:
    for fault in faults:
        if key.startswith(fault.prefix):
            return fault
    return None
