"""Membership changes as phases (kvnode.replication.membership): replica sets per phase,
barriers, what a restarted node adopts, the STATUS encoding."""

from __future__ import annotations

import pytest

from kvnode.keys import key_hash
from kvnode.replication import membership
from kvnode.replication.membership import BOTH, JOINT, NEW, SETTLED, Status, View
from kvnode.replication.rebalance import moves
from kvnode.replication.ring import Member, Ring
from kvnode.storage import Record

pytestmark = pytest.mark.unit

THREE = tuple(Member(f"kv-{i}", f"10.0.0.{i}", 7071) for i in range(3))
FIVE = tuple(Member(f"kv-{i}", f"10.0.0.{i}", 7071) for i in range(5))


def _status(node: str, view: View, drained: bool = True) -> Status:
    return Status(
        node, view.target.members, tuple(r.members for r in view.previous), view.phase, drained
    )


def _moved_key(view: View) -> int:
    """A key hash whose owners differ between the old and the new ring."""
    for i in range(10_000):
        khash = key_hash(f"k{i}".encode())
        if view.previous[0].preference(khash, 2) != view.target.preference(khash, 2):
            return khash
    raise AssertionError("no key moved")


def test_a_change_starts_joint_where_writes_need_the_old_quorum_and_reach_the_new_owners() -> None:
    view = membership.change(View(Ring(THREE)), FIVE)
    assert view.phase == JOINT and view.previous == (Ring(THREE),)
    khash = _moved_key(view)
    old, new = Ring(THREE).preference(khash, 2), Ring(FIVE).preference(khash, 2)
    assert view.write_sets(khash, 2) == (old,) and view.read_sets(khash, 2) == (old,)
    assert set(view.copy_to(khash, 2)) == set(old) | set(new)
    assert view.involved() == tuple(m.id for m in FIVE)
    both = View(view.target, view.previous, BOTH)
    assert both.write_sets(khash, 2) == (old, new) and both.read_sets(khash, 2) == (old, new)
    assert View(view.target, view.previous, NEW).read_sets(khash, 2) == (new,)
    assert membership.change(view, FIVE).previous == view.previous, (
        "the same list again changes nothing"
    )


def test_phases_advance_only_when_every_member_of_both_rings_reached_the_phase_drained() -> None:
    view = membership.change(View(Ring(THREE)), FIVE)
    peers = {m.id: _status(m.id, view) for m in FIVE if m.id != "kv-0"}
    assert membership.all_joint(view, "kv-0", peers)
    assert membership.advance(view, "kv-0", False, peers) == view, "not drained itself"
    lagging = {**peers, "kv-2": _status("kv-2", View(Ring(THREE)))}  # still on the old ring
    assert not membership.all_joint(view, "kv-0", lagging)
    assert membership.advance(view, "kv-0", True, lagging) == view
    undrained = {**peers, "kv-4": _status("kv-4", view, drained=False)}
    assert membership.advance(view, "kv-0", True, undrained) == view
    fresh = {
        **peers,
        "kv-4": _status("kv-4", View(Ring(FIVE))),
    }  # started, did not learn the change
    assert membership.advance(view, "kv-0", True, fresh) == view
    both = membership.advance(view, "kv-0", True, peers)
    assert both.phase == BOTH
    assert membership.advance(both, "kv-0", True, peers) == both, "peers are still joint"
    peers_both = {k: _status(k, both) for k in peers}
    new = membership.advance(both, "kv-0", True, peers_both)
    assert new.phase == NEW and not membership.everyone_new(new, "kv-0", peers_both)
    assert membership.everyone_new(new, "kv-0", {k: _status(k, new) for k in peers})


def test_scale_in_waits_for_the_leaving_members_and_they_stream_everything() -> None:
    view = membership.change(View(Ring(FIVE)), THREE)
    assert view.involved() == tuple(m.id for m in FIVE)
    peers = {m.id: _status(m.id, view) for m in FIVE if m.id not in ("kv-0", "kv-4")}
    assert membership.advance(view, "kv-0", True, peers) == view, "kv-4 (leaving) not heard yet"
    # the remaining members may settle while a leaving one is still `both`: it follows them
    both = View(view.target, view.previous, BOTH)
    peers = {m.id: _status(m.id, View(Ring(THREE))) for m in THREE} | {
        "kv-3": _status("kv-3", both)
    }
    assert membership.advance(both, "kv-4", True, peers).phase == NEW
    assert membership.everyone_new(View(view.target, view.previous, NEW), "kv-4", peers)
    records = [Record(f"k{i}".encode(), b"v", 1) for i in range(50)]
    sent = moves(records, Ring(FIVE), Ring(THREE), "kv-4", 2)
    assert sum(len(r) for r in sent.values()) == 2 * len(records), (
        "a leaving member sends to every new owner"
    )


def test_a_restarted_member_adopts_the_change_in_progress_from_a_peer() -> None:
    mine = View(Ring(FIVE))  # started with the new peers file, knows nothing else
    peer_view = View(Ring(FIVE), (Ring(THREE),), BOTH)
    adopted = membership.adopt(mine, _status("kv-1", peer_view))
    assert adopted == peer_view
    assert membership.adopt(mine, _status("kv-1", View(Ring(FIVE)))) is None, "nothing going on"
    old_ring_peer = membership.adopt(mine, _status("kv-1", View(Ring(THREE))))
    assert old_ring_peer == View(Ring(FIVE), (Ring(THREE),), JOINT), (
        "the peer has not read the new list yet"
    )
    assert (
        membership.adopt(mine, _status("kv-1", membership.change(View(Ring(THREE)), THREE[:2])))
        is None
    )


def test_a_change_before_the_last_settled_keeps_every_ring_that_may_hold_data() -> None:
    first = membership.change(View(Ring(THREE)), FIVE)
    second = membership.change(first, FIVE[:4])
    assert second.phase == JOINT and second.previous == (Ring(THREE), Ring(FIVE))
    back = membership.change(second, THREE)
    assert back.previous == (Ring(THREE), Ring(FIVE), Ring(FIVE[:4])) and back.phase == JOINT
    assert membership.change(View(Ring(THREE), (), SETTLED), THREE) == View(Ring(THREE))
    assert membership.change(View(Ring(())), THREE) == View(Ring(THREE)), (
        "a first list moves nothing"
    )


def test_status_round_trips_and_bad_status_is_refused_naming_what_is_wrong() -> None:
    status = _status("kv-1", membership.change(View(Ring(THREE)), FIVE), drained=False)
    assert membership.decode_status(membership.encode_status(status)) == status
    for body, why in (
        (b"nope", "not JSON"),
        (b"[]", "not an object"),
        (
            b'{"node": "a", "phase": "later", "drained": true, "previous": [], "target": []}',
            "phase",
        ),
        (
            b'{"node": "a", "phase": "joint", "drained": true, "previous": [], "target": [["a"]]}',
            "[id, host, port]",
        ),
    ):
        with pytest.raises(
            membership.StatusError, match=why.replace("[", r"\[").replace("]", r"\]")
        ):
            membership.decode_status(body)
