"""Key hashing shared by placement, Merkle trees and span attributes (pure)."""

from __future__ import annotations

import hashlib

HASH_BITS = 63  # fits a signed SQLite INTEGER
_MASK = (1 << HASH_BITS) - 1


def key_hash(key: bytes) -> int:
    """A stable 63-bit hash of a key: ring position, Merkle bucket and `kvstore.key.hash`."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & _MASK
