"""Membership changes as explicit phases (pure): which replica sets a read or a write needs
while key ranges move, and when a node may advance. Never imports the transport or asyncio.

A change from ring `old` to ring `new` (the peers file changed) goes through four phases on
every node; a node advances only once every member of both rings has reached its phase (the
members tell each other their phase with STATUS messages), so two nodes are never more than
one phase apart, and the rules of any two adjacent phases intersect:

| phase | writes acknowledged by | reads ask | a node enters it when |
| --- | --- | --- | --- |
| `settled` | quorum of `new` | quorum of `new` | there is no change going on |
| `joint` | quorum of `old` (also sent to the new owners; hints if down) | quorum of `old` | its peers file changed |
| `both` | quorum of `old` and of `new` | quorum of `old` and of `new` | all are `joint` and drained |
| `new` | quorum of `new` | quorum of `new` | all are `both` and drained |

Drained: this node streamed every record it holds to the owners it gained (rebalance) after
all members had reached `joint`, and holds no hints for a member of the new ring. So the old
owners are consulted until the new owners have the data, and the new owners are written to
from the moment a node knows about them. A member that restarts in the middle of a change
learns its phase and the old ring from its peers' STATUS messages (`adopt`). `rebalancing` in
`GET /v1/cluster` is true until every member of the new ring reached `new` (a leaving member
may be stopped only then).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kvnode.replication.ring import Member, Ring

SETTLED, JOINT, BOTH, NEW = "settled", "joint", "both", "new"
PHASES = (SETTLED, JOINT, BOTH, NEW)


class StatusError(ValueError):
    pass


def fingerprint(members: Iterable[Member]) -> str:
    """A ring's identity: its sorted member list (the same text on every node)."""
    return ",".join(f"{m.id}={m.address}" for m in sorted(members))


@dataclass(frozen=True)
class Status:
    """What one node tells its peers about its view of a membership change."""

    node: str
    target: tuple[Member, ...]
    previous: tuple[tuple[Member, ...], ...]
    phase: str
    drained: bool

    @property
    def target_fp(self) -> str:
        return fingerprint(self.target)


def encode_status(status: Status) -> bytes:
    doc = {
        "node": status.node,
        "target": [[m.id, m.host, m.port] for m in status.target],
        "previous": [[[m.id, m.host, m.port] for m in ring] for ring in status.previous],
        "phase": status.phase,
        "drained": status.drained,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _members(raw: object) -> tuple[Member, ...]:
    if not isinstance(raw, list):
        raise StatusError("expected a member list")
    out = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not isinstance(item[1], str)
            or not isinstance(item[2], int)
        ):
            raise StatusError("expected [id, host, port]")
        out.append(Member(item[0], item[1], item[2]))
    return tuple(sorted(out))


def decode_status(body: bytes) -> Status:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StatusError(f"status is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StatusError("status is not an object")
    node, phase, drained = doc.get("node"), doc.get("phase"), doc.get("drained")
    previous = doc.get("previous")
    if (
        not isinstance(node, str)
        or not node
        or phase not in PHASES
        or not isinstance(drained, bool)
    ):
        raise StatusError("status needs node, phase (joint|both|new|settled) and drained")
    if not isinstance(previous, list):
        raise StatusError("status needs previous (a list of member lists)")
    return Status(
        node, _members(doc.get("target")), tuple(_members(r) for r in previous), phase, drained
    )


def quorum(n: int) -> int:
    return n // 2 + 1


@dataclass(frozen=True)
class View:
    """A node's rings during a change: `target` (the peers file) and `previous` (the rings
    that still hold acknowledged data; empty once settled), and its phase."""

    target: Ring
    previous: tuple[Ring, ...] = ()
    phase: str = SETTLED

    def write_sets(self, khash: int, rf: int) -> tuple[tuple[str, ...], ...]:
        """The replica sets whose quorum a write needs (extra owners only receive a copy)."""
        if self.phase in (SETTLED, NEW) or not self.previous:
            return (self.target.preference(khash, rf),)
        old = tuple(r.preference(khash, rf) for r in self.previous)
        return old if self.phase == JOINT else (*old, self.target.preference(khash, rf))

    def read_sets(self, khash: int, rf: int) -> tuple[tuple[str, ...], ...]:
        return self.write_sets(khash, rf)

    def copy_to(self, khash: int, rf: int) -> tuple[str, ...]:
        """Every replica a write is sent to: the owners under all rings of the view."""
        if not self.previous:
            return self.target.preference(khash, rf)
        out = list(self.target.preference(khash, rf))
        for ring in self.previous:
            out += [o for o in ring.preference(khash, rf) if o not in out]
        return tuple(out)

    def involved(self) -> tuple[str, ...]:
        """Every member of every ring of the view (they all take part in the barriers)."""
        ids = set(self.target.ids)
        for ring in self.previous:
            ids.update(ring.ids)
        return tuple(sorted(ids))


def change(view: View, members: tuple[Member, ...]) -> View:
    """The view after the peers file named `members`: a new change starts in `joint`. A
    change that arrives before the last one settled keeps every ring that may hold data."""
    target = Ring(members, view.target.vnodes)
    if members == view.target.members:
        return view
    if not view.target.members:  # no ring before (no peers file yet): nothing to move
        return View(target)
    if view.phase in (SETTLED, NEW):
        return View(target, (view.target,), JOINT)
    previous: list[Ring] = []
    for ring in (*view.previous, view.target):  # the same ring as the target included
        if ring not in previous:
            previous.append(ring)
    return View(target, tuple(previous), JOINT)


def advance(view: View, me: str, drained: bool, peers: Mapping[str, Status]) -> View:
    """The next phase once every member of the change has reached this one (pure)."""
    if view.phase == SETTLED or not view.previous:
        return view
    target_fp = fingerprint(view.target.members)
    others = [m for m in view.involved() if m != me]
    statuses = [peers.get(m) for m in others]
    if any(s is None or s.target_fp != target_fp for s in statuses):
        return view
    known = [s for s in statuses if s is not None]
    # a peer `settled` on the new ring while this node is `joint` has not learnt of the change
    # yet (it just started): it does not count until it adopted the change. While this node is
    # `both`, a settled peer went through `new` (a leaving member waits for the others, which
    # settle once every member of the new ring is `new`), or is as good as `new`.
    if (
        view.phase == JOINT
        and drained
        and all(s.drained and s.phase in (JOINT, BOTH, NEW) for s in known)
    ):
        return View(view.target, view.previous, BOTH)
    if (
        view.phase == BOTH
        and drained
        and all(s.drained and s.phase in (BOTH, NEW, SETTLED) for s in known)
    ):
        return View(view.target, view.previous, NEW)
    return view


def everyone_new(view: View, me: str, peers: Mapping[str, Status]) -> bool:
    """True once every member of the new ring reached `new` (then the old rings are dropped)."""
    if view.phase != NEW:
        return view.phase == SETTLED
    target_fp = fingerprint(view.target.members)
    for m in view.target.ids:
        if m == me:
            continue
        s = peers.get(m)
        if s is None or s.target_fp != target_fp or s.phase not in (NEW, SETTLED):
            return False
    return True


def all_joint(view: View, me: str, peers: Mapping[str, Status]) -> bool:
    """Every member of the change knows the new ring (streaming may start)."""
    target_fp = fingerprint(view.target.members)
    return all(
        (s := peers.get(m)) is not None and s.target_fp == target_fp
        for m in view.involved()
        if m != me
    )


def adopt(view: View, status: Status) -> View | None:
    """What a node that just started (its phase unknown to itself) takes from a peer: the
    same target in the middle of a change gives that change's rings and phase; another
    target means a change to this node's ring is starting (the peer's ring is the old one).
    None when there is nothing to take."""
    target_fp = fingerprint(view.target.members)
    if status.target_fp == target_fp:
        if not status.previous or status.phase == SETTLED:
            return None
        return View(
            view.target, tuple(Ring(r, view.target.vnodes) for r in status.previous), status.phase
        )
    if status.previous or not status.target:
        return None  # the peer is itself changing to yet another ring: wait for it
    return View(view.target, (Ring(status.target, view.target.vnodes),), JOINT)


__all__ = [
    "BOTH",
    "JOINT",
    "NEW",
    "SETTLED",
    "Status",
    "StatusError",
    "View",
    "adopt",
    "advance",
    "all_joint",
    "change",
    "decode_status",
    "encode_status",
    "everyone_new",
    "fingerprint",
    "quorum",
]
