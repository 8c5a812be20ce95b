"""Merkle trees over key buckets, and their diff (pure).

Leaves are buckets of the 63-bit key hash (top DEPTH bits). A leaf's hash is the XOR of
its entries' digests, so the tree does not depend on scan order; inner nodes hash their two
children. Two replicas compare roots, then descend only into differing subtrees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from kvnode.keys import HASH_BITS

DEPTH = 10
LEAVES = 1 << DEPTH
_EMPTY = bytes(16)

Entry = tuple[bytes, int, int, bool]  # key, khash, version, tombstone
Tree = list[list[bytes]]  # levels[0] = root level (1 node) ... levels[DEPTH] = leaves


def leaf_of(khash: int) -> int:
    return khash >> (HASH_BITS - DEPTH)


def leaf_ranges(leaf_indices: Iterable[int]) -> list[tuple[int, int]]:
    """Half-open key-hash ranges covering the given leaves (adjacent leaves merged)."""
    shift = HASH_BITS - DEPTH
    ranges: list[tuple[int, int]] = []
    for i in sorted(set(leaf_indices)):
        lo, hi = i << shift, (i + 1) << shift
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    return ranges


def entry_digest(key: bytes, version: int, tombstone: bool) -> int:
    data = key + version.to_bytes(8, "big") + (b"\1" if tombstone else b"\0")
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def leaves(entries: Iterable[Entry]) -> list[bytes]:
    acc = [0] * LEAVES
    for key, khash, version, tombstone in entries:
        acc[leaf_of(khash)] ^= entry_digest(key, version, tombstone)
    return [a.to_bytes(16, "big") for a in acc]


def build(entries: Iterable[Entry]) -> Tree:
    return from_leaves(leaves(entries))


def from_leaves(level: list[bytes]) -> Tree:
    if len(level) != LEAVES:
        raise ValueError(f"expected {LEAVES} leaves, got {len(level)}")
    levels = [level]
    while len(level) > 1:
        level = [
            _EMPTY
            if a == _EMPTY and b == _EMPTY
            else hashlib.blake2b(a + b, digest_size=16).digest()
            for a, b in zip(level[0::2], level[1::2])
        ]
        levels.append(level)
    levels.reverse()
    return levels


def root(tree: Tree) -> bytes:
    return tree[0][0]


def diff(a: Tree, b: Tree) -> list[int]:
    """Indices of the leaves that differ, found by descending from the root."""
    if a[0][0] == b[0][0]:
        return []
    frontier = [0]
    for depth in range(1, len(a)):
        frontier = [c for i in frontier for c in (2 * i, 2 * i + 1) if a[depth][c] != b[depth][c]]
    return frontier
