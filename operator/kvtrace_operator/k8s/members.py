"""Asking KV members about themselves (``GET :7070/v1/cluster``): whether a member that left
the peers file has handed all its data over (the drain before a scale-down)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx2

from kvtrace.shared.endpoints import resolve_url
from kvtrace_operator.render import names


def member_url(cluster: Mapping[str, Any], ordinal: int) -> str:
    """The client API of StatefulSet member ``ordinal``, by its stable DNS name."""
    name, namespace = names.name_of(dict(cluster)), names.namespace_of(dict(cluster))
    host = f"{name}-{ordinal}.{names.service_dns(names.peers_service(name), namespace)}"
    return f"http://{host}:{names.CLIENT_PORT}/v1/cluster"


def drained(view: Mapping[str, Any] | None) -> bool:
    """A leaving member is drained when it knows it left (``member`` false), its rebalancing
    pass is over and it holds no hints for others (they would be lost with it)."""
    if not view:
        return False
    hints = view.get("hints_pending") or {}
    return view.get("member") is False and not view.get("rebalancing") and not any(hints.values())


async def member_views(cluster: Mapping[str, Any], ordinals: Sequence[int],
                       timeout: float = 3.0) -> list[dict[str, Any] | None]:
    """Each member's ``/v1/cluster`` view, or None when it cannot be asked (not running yet,
    unreachable from the operator, an error)."""
    async with httpx2.AsyncClient(timeout=timeout, trust_env=False) as http:
        async def one(ordinal: int) -> dict[str, Any] | None:
            try:
                # resolve_url: a no-op unless a development pod runner maps cluster names.
                response = await http.get(resolve_url(member_url(cluster, ordinal)))
                return response.json() if response.status_code == 200 else None
            except (httpx2.HTTPError, ValueError, OSError):
                return None
        return list(await asyncio.gather(*(one(i) for i in ordinals)))
