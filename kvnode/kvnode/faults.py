"""Test-only fault injection (off unless `--faults`/`KVNODE_FAULTS` is set). Pure parsing.

Spec: comma-separated rules, `error:PREFIX` (operations on keys starting with PREFIX fail
with HTTP 500 and an ERROR span) and `delay:PREFIX:DURATION` (they are slowed down by
DURATION, e.g. `300ms`), used to prove that tail sampling keeps error and slow traces;
`protocol:LOW-HIGH` (the node speaks only those peer protocol versions, as another build
would: the mixed-version tests); `partitions:PATH` (a file of `FROM TO` member-id lines, re-read
while the node runs: a node named FROM fails its peer calls to TO at once, as if the network
dropped them: one-way partitions, two-way with both lines; the fault harness's nemesis).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvnode.units import parse_duration


@dataclass(frozen=True)
class Fault:
    kind: str  # "error", "delay" or "protocol"
    prefix: bytes
    delay: float = 0.0
    versions: tuple[int, int] = (0, 0)
    path: str = ""


def parse_faults(spec: str | None) -> tuple[Fault, ...]:
    faults = []
    for rule in (spec or "").split(","):
        rule = rule.strip()
        if not rule:
            continue
        kind, _, rest = rule.partition(":")
        if kind == "error" and rest:
            faults.append(Fault("error", rest.encode()))
        elif kind == "protocol":
            low, sep, high = rest.partition("-")
            if not (
                sep
                and low.isascii()
                and low.isdigit()
                and high.isascii()
                and high.isdigit()
                and 1 <= int(low) <= int(high) < 1 << 16
            ):
                raise ValueError(f"fault {rule!r}: expected protocol:LOW-HIGH, e.g. protocol:1-1")
            faults.append(Fault("protocol", b"", versions=(int(low), int(high))))
        elif kind == "partitions" and rest:
            faults.append(Fault("partitions", b"", path=rest))
        elif kind == "delay":
            prefix, _, duration = rest.rpartition(":")
            if not prefix:
                raise ValueError(f"fault {rule!r}: expected delay:PREFIX:DURATION")
            faults.append(Fault("delay", prefix.encode(), parse_duration(duration)))
        else:
            raise ValueError(
                f"fault {rule!r}: expected error:PREFIX, delay:PREFIX:DURATION, "
                "protocol:LOW-HIGH or partitions:PATH"
            )
    return tuple(faults)


def protocol_versions(faults: tuple[Fault, ...], default: tuple[int, int]) -> tuple[int, int]:
    """The peer protocol versions to speak: `default` unless a protocol rule says otherwise."""
    return next((f.versions for f in faults if f.kind == "protocol"), default)


def partitions_file(faults: tuple[Fault, ...]) -> str:
    return next((f.path for f in faults if f.kind == "partitions"), "")


def cut_off(text: str, me: str) -> frozenset[str]:
    """The members `me` cannot send to, from a partitions file's `FROM TO` lines."""
    out = set()
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) == 2 and parts[0] == me:
            out.add(parts[1])
    return frozenset(out)


def match(faults: tuple[Fault, ...], key: bytes) -> Fault | None:
    for fault in faults:
        if fault.kind in ("error", "delay") and key.startswith(fault.prefix):
            return fault
    return None
