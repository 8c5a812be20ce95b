"""Members and the consistent-hash ring with virtual nodes (pure)."""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field

from kvnode.keys import HASH_BITS


@dataclass(frozen=True, order=True)
class Member:
    id: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class PeersError(ValueError):
    pass


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PeersError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse_peers(text: str) -> tuple[Member, ...]:
    """`ID=HOST:PORT` entries separated by commas or newlines; `#` starts a comment."""
    members: dict[str, Member] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for entry in line.split(","):
            entry = entry.strip()
            if not entry:
                continue
            ident, sep, addr = entry.partition("=")
            ident = ident.strip()
            if not sep or not ident:
                raise PeersError(f"expected ID=HOST:PORT, got {entry!r}")
            if ident in members:
                raise PeersError(f"member {ident!r} listed twice")
            host, port = parse_hostport(addr)
            members[ident] = Member(ident, host, port)
    return tuple(sorted(members.values()))


def _token(member_id: str, vnode: int) -> int:
    digest = hashlib.blake2b(f"{member_id}#{vnode}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - HASH_BITS)


@dataclass(frozen=True)
class Ring:
    members: tuple[Member, ...]
    vnodes: int = 64
    _tokens: list[int] = field(init=False, repr=False, compare=False)
    _owners: list[str] = field(init=False, repr=False, compare=False)
    _by_id: dict[str, Member] = field(init=False, repr=False, compare=False)
    _segments: dict[tuple[int, int], tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        points = sorted((_token(m.id, v), m.id) for m in self.members for v in range(self.vnodes))
        object.__setattr__(self, "_tokens", [t for t, _ in points])
        object.__setattr__(self, "_owners", [o for _, o in points])
        object.__setattr__(self, "_by_id", {m.id: m for m in self.members})
        object.__setattr__(self, "_segments", {})

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members)

    def member(self, member_id: str) -> Member | None:
        return self._by_id.get(member_id)

    def preference(self, khash: int, n: int) -> tuple[str, ...]:
        """The first `n` distinct members clockwise from the key's position. Every key between
        two neighbouring tokens has the same list, so lists are memoised per segment."""
        owners = self._owners
        if not owners:
            return ()
        start = bisect.bisect_right(self._tokens, khash)
        cached = self._segments.get((start, n))
        if cached is None:
            cached = self._segments[(start, n)] = self._walk(start, min(n, len(self.members)))
        return cached

    def _walk(self, start: int, n: int) -> tuple[str, ...]:
        owners = self._owners
        picked: list[str] = []
        size = len(owners)
        for i in range(size):
            owner = owners[(start + i) % size]
            if owner not in picked:
                picked.append(owner)
                if len(picked) == n:
                    break
        return tuple(picked)
