"""Static bearer tokens (pure): parsing the tokens file, reading the Authorization header,
and matching in constant time.

The file holds one token per line; blank lines and lines starting with ``#`` are ignored,
surrounding whitespace is not part of a token. A presented token is compared with every
token of the file, always all of them, as SHA-256 digests with :func:`hmac.compare_digest`:
neither the position of a match nor the length of a token shows in the time it takes.
"""

from __future__ import annotations

import hashlib
import hmac
import re

# RFC 6750 b64token: what may follow "Bearer ".
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def parse_tokens(text: str) -> tuple[str, ...]:
    return tuple(
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )


def unusable(tokens: tuple[str, ...]) -> list[int]:
    """Positions (1-based) of tokens no client can send as ``Bearer TOKEN`` (RFC 6750
    b64token: letters, digits and ``-._~+/``, then ``=`` padding): they never match."""
    return [index for index, token in enumerate(tokens, 1) if not _B64TOKEN.fullmatch(token)]


def digests(tokens: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(hashlib.sha256(token.encode()).digest() for token in tokens)


def bearer(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer TOKEN`` (scheme case-insensitive), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(token):
        return None
    return token


def matches(token: str, known: tuple[bytes, ...]) -> bool:
    """Whether ``token`` is one of the tokens whose digests are ``known`` (constant time)."""
    presented = hashlib.sha256(token.encode()).digest()
    found = False
    for digest in known:
        found |= hmac.compare_digest(presented, digest)
    return found
