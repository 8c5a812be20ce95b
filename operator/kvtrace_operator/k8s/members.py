"""Asking KV members about themselves (``GET :7070/v1/cluster``): whether a member that left
the peers file has handed all its data over (the drain before a scale-down). With the
cluster's TLS and tokens (on by default) the operator verifies the members with their CA
bundle and sends the generated client token (``member_credentials`` reads both)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import httpx2

from kvtrace.shared.endpoints import resolve_url
from kvtrace_operator.k8s.secrets import SecretData
from kvtrace_operator.render import kvsecurity, names, tls
from kvtrace_operator.spec import parse_kvcluster


@dataclasses.dataclass(frozen=True)
class Credentials:
    """The members' CA bundle (None: plaintext) and a client token (None: no auth)."""

    ca_pem: str | None = None
    token: str | None = None


def member_url(cluster: Mapping[str, Any], ordinal: int, scheme: str = "http") -> str:
    """The client API of StatefulSet member ``ordinal``, by its stable DNS name."""
    name, namespace = names.name_of(dict(cluster)), names.namespace_of(dict(cluster))
    host = f"{name}-{ordinal}.{names.service_dns(names.peers_service(name), namespace)}"
    return f"{scheme}://{host}:{names.CLIENT_PORT}/v1/cluster"


async def _secret_text(secret_data: SecretData, name: str, key: str, namespace: str) -> str | None:
    secret = await secret_data.get(name, namespace)
    value = ((secret or {}).get("data") or {}).get(key)
    return (
        base64.b64decode(value).decode().strip() + ("\n" if key == tls.CA_FILE else "")
        if value
        else None
    )


async def member_credentials(secret_data: SecretData, cluster: Mapping[str, Any]) -> Credentials:
    """What reaching the members takes: their bundle (key ``ca.crt`` of the trust Secret, or
    of the user's Secret in mode secret) and the generated token (``NAME-kv-client-token``).
    A Secret not written yet leaves its part None (the members are not ready then either)."""
    cluster = dict(cluster)
    spec = parse_kvcluster(cluster.get("spec"))
    namespace = names.namespace_of(cluster)
    ca = (
        await _secret_text(
            secret_data, kvsecurity.trust_secret(cluster, spec), tls.CA_FILE, namespace
        )
        if kvsecurity.tls_on(spec)
        else None
    )
    token = (
        await _secret_text(
            secret_data, names.kv_client_token(names.name_of(cluster)), "token", namespace
        )
        if kvsecurity.auth_on(spec)
        else None
    )
    return Credentials(ca, token)


def drained(view: Mapping[str, Any] | None) -> bool:
    """A leaving member is drained when it knows it left (``member`` false), its rebalancing
    pass is over and it holds no hints for others (they would be lost with it)."""
    if not view:
        return False
    hints = view.get("hints_pending") or {}
    return view.get("member") is False and not view.get("rebalancing") and not any(hints.values())


async def member_views(
    cluster: Mapping[str, Any],
    ordinals: Sequence[int],
    credentials: Credentials = Credentials(),
    timeout: float = 3.0,
) -> list[dict[str, Any] | None]:
    """Each member's ``/v1/cluster`` view, or None when it cannot be asked (not running yet,
    unreachable from the operator, an error)."""
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cadata=credentials.ca_pem) if credentials.ca_pem else True
    )
    headers = {"Authorization": f"Bearer {credentials.token}"} if credentials.token else {}
    scheme = "https" if credentials.ca_pem else "http"
    async with httpx2.AsyncClient(
        timeout=timeout, trust_env=False, verify=verify, headers=headers
    ) as http:

        async def one(ordinal: int) -> dict[str, Any] | None:
            try:
                # resolve_url: a no-op unless a development pod runner maps cluster names.
                response = await http.get(resolve_url(member_url(cluster, ordinal, scheme)))
                return response.json() if response.status_code == 200 else None
            except (httpx2.HTTPError, ValueError, OSError, ssl.SSLError):
                return None

        return list(await asyncio.gather(*(one(i) for i in ordinals)))
