"""What crosses the proxy (pure): the headers forwarded each way, and the 401 challenge.

Hop-by-hop headers (RFC 9110 section 7.6.1) never cross; ``Authorization`` never reaches
Jaeger (it has no use for the token and must not log it); ``Host`` and ``Content-Length``
are set again by the client library for the upstream request, while the response keeps
Jaeger's ``Content-Length`` (its body is streamed back unchanged, compressed or not).
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "host", "content-length"}


def _connection_tokens(items: list[tuple[str, str]]) -> set[str]:
    """Headers named by ``Connection`` are hop-by-hop too."""
    return {
        token.strip().lower()
        for key, value in items
        if key.lower() == "connection"
        for token in value.split(",")
    }


def request_headers(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    items = list(items)
    dropped = NOT_FORWARDED | _connection_tokens(items)
    return [(key, value) for key, value in items if key.lower() not in dropped]


def response_headers(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    items = list(items)
    dropped = HOP_BY_HOP | _connection_tokens(items)
    return [(key, value) for key, value in items if key.lower() not in dropped]


def _quoted(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')


def challenge(realm: str, reason: str, presented: bool) -> str:
    """``WWW-Authenticate`` of a 401 (RFC 6750): ``error="invalid_token"`` and the reason
    only when a token was presented."""
    value = f'Bearer realm="{_quoted(realm)}"'
    if presented:
        value += f', error="invalid_token", error_description="{_quoted(reason)}"'
    return value
