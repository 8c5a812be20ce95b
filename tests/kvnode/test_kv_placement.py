"""Ring placement and movement, HLC ordering, Merkle diffs (pure functions)."""

from __future__ import annotations

import random

import pytest

from kvnode.keys import key_hash
from kvnode.replication import hlc, merkle
from kvnode.replication.rebalance import moves
from kvnode.replication.ring import Member, PeersError, Ring, parse_peers
from kvnode.storage import Record

pytestmark = pytest.mark.unit


def members(n: int) -> tuple[Member, ...]:
    return tuple(Member(f"kv-{i}", f"10.0.0.{i}", 7071) for i in range(n))


KEYS = [f"key-{i}".encode() for i in range(3000)]


def test_preference_lists_are_distinct_members_and_stable() -> None:
    ring = Ring(members(5))
    for key in KEYS[:500]:
        prefs = ring.preference(key_hash(key), 3)
        assert len(prefs) == len(set(prefs)) == 3
        assert prefs == Ring(tuple(reversed(members(5)))).preference(key_hash(key), 3)
    assert Ring(members(2)).preference(1, 3) == Ring(members(2)).preference(1, 3)
    assert len(Ring(members(2)).preference(1, 3)) == 2
    assert Ring(()).preference(5, 3) == ()


def test_load_is_spread_by_virtual_nodes() -> None:
    ring = Ring(members(5), vnodes=64)
    counts: dict[str, int] = {}
    for key in KEYS:
        primary = ring.preference(key_hash(key), 1)[0]
        counts[primary] = counts.get(primary, 0) + 1
    assert set(counts) == {m.id for m in members(5)}
    assert max(counts.values()) < 2.2 * min(counts.values())


def test_join_moves_only_keys_gained_by_the_new_member() -> None:
    old, new = Ring(members(4)), Ring(members(5))
    moved = 0
    for key in KEYS:
        before, after = set(old.preference(key_hash(key), 3)), set(new.preference(key_hash(key), 3))
        gained = after - before
        assert gained <= {"kv-4"}, "a join only ever adds the new member to preference lists"
        assert len(before - after) == len(gained)
        moved += bool(gained)
    # about N/members of the keys gain the new member, far from all of them
    assert 0.35 * len(KEYS) < moved < 0.85 * len(KEYS)


def test_leave_hands_keys_to_the_remaining_members() -> None:
    old, new = Ring(members(5)), Ring(members(4))
    for key in KEYS[:1000]:
        before, after = set(old.preference(key_hash(key), 3)), set(new.preference(key_hash(key), 3))
        if "kv-4" not in before:
            assert before == after, "keys the leaver did not hold stay put"
        else:
            assert len(after - before) == 1


def test_moves_send_each_record_to_its_new_owners() -> None:
    old, new = Ring(members(3)), Ring(members(5))
    records = [Record(k, b"v", 1) for k in KEYS[:500]]
    plan = moves(records, old, new, "kv-0", 3)
    assert set(plan) <= {"kv-3", "kv-4"}
    for target, recs in plan.items():
        for r in recs:
            assert target in new.preference(key_hash(r.key), 3)
    # a leaving member sends every record to all of its new owners
    plan = moves(records, new, old, "kv-4", 3)
    assert sum(len(v) for v in plan.values()) == 3 * len(records)


def test_parse_peers() -> None:
    text = "a=10.0.0.1:7071, b=host-b.svc:7071\n# comment\nc=[::1]:7071\n"
    assert [m.id for m in parse_peers(text)] == ["a", "b", "c"]
    assert parse_peers(text)[2].host == "::1"
    for bad in ("a=10.0.0.1", "=x:1", "a=x:1,a=y:2", "a=x:99999", "justtext"):
        with pytest.raises(PeersError):
            parse_peers(bad)


def test_hlc_is_monotonic_and_follows_wall_time() -> None:
    v1 = hlc.tick(0, 1000)
    assert hlc.unpack(v1) == (1000, 0)
    v2 = hlc.tick(v1, 1000)
    v3 = hlc.tick(v2, 999)  # wall clock went backwards
    v4 = hlc.tick(v3, 2000)
    assert v1 < v2 < v3 < v4
    assert hlc.unpack(v4) == (2000, 0)
    # receiving a version from the future keeps us ahead of it
    remote = hlc.pack(5000, 7)
    v5 = hlc.observe(v4, remote, 2001)
    assert v5 > remote and hlc.wall_ms_of(v5) == 5000
    # logical overflow carries into the millisecond
    full = hlc.pack(10, (1 << hlc.LOGICAL_BITS) - 1)
    assert hlc.unpack(hlc.tick(full, 10)) == (11, 0)


def test_hlc_clock_never_repeats() -> None:
    clock = hlc.Clock(wall_ms=lambda: 42)
    seen = [clock.now() for _ in range(1000)]
    assert seen == sorted(set(seen))
    clock.observe(hlc.pack(100, 0))
    assert clock.now() > hlc.pack(100, 0)


def _entries(records: dict[bytes, int]) -> list[merkle.Entry]:
    return [(k, key_hash(k), v, False) for k, v in records.items()]


def test_merkle_diff_finds_exactly_the_changed_buckets() -> None:
    base = dict.fromkeys(KEYS, 1)
    a = merkle.build(_entries(base))
    assert merkle.diff(a, merkle.build(_entries(dict(reversed(list(base.items())))))) == []
    changed = dict(base)
    rng = random.Random(3)
    touched = rng.sample(KEYS, 5)
    for k in touched:
        changed[k] = 2
    missing = dict(changed)
    extra_key = b"only-on-one-side"
    missing[extra_key] = 1
    b = merkle.build(_entries(missing))
    expected = sorted({merkle.leaf_of(key_hash(k)) for k in [*touched, extra_key]})
    assert merkle.diff(a, b) == expected
    assert merkle.root(a) != merkle.root(b)
    assert merkle.from_leaves(merkle.leaves(_entries(base))) == a
    with pytest.raises(ValueError):
        merkle.from_leaves([b""] * 3)


def test_batches_are_bounded_in_bytes() -> None:
    from kvnode.replication.peers import batches

    records = [Record(f"k{i}".encode(), b"x" * 1000, i) for i in range(50)]
    out = list(batches(records, max_bytes=5000))
    assert [r for b in out for r in b] == records
    assert all(sum(len(r.key) + len(r.value) + 16 for r in b) <= 5000 for b in out)
    assert [len(b) for b in batches([Record(b"huge", b"x" * 9000, 1)], max_bytes=5000)] == [1]
    assert list(batches([])) == []


def test_leaf_ranges_cover_exactly_their_leaves() -> None:
    ranges = merkle.leaf_ranges([5, 3, 4, 9])
    assert len(ranges) == 2
    for key in KEYS:
        leaf = merkle.leaf_of(key_hash(key))
        inside = any(lo <= key_hash(key) < hi for lo, hi in ranges)
        assert inside == (leaf in {3, 4, 5, 9})
    assert merkle.leaf_ranges([]) == []
    assert merkle.leaf_ranges([merkle.LEAVES - 1])[0][1] == 1 << 63
