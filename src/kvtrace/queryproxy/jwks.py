"""The issuer's signing keys: OIDC discovery, then its JWKS, cached (the I/O of ``oidc``).

``ISSUER/.well-known/openid-configuration`` must name the same ``issuer`` and an https
``jwks_uri``. Keys are fetched at start and kept; a token signed with a ``kid`` the cache
does not know triggers one refetch (at most one per ``min_refresh_s``, so random kids cannot
make the proxy hammer the issuer); keys older than ``max_age_s`` are fetched again at the
next request. A failed fetch keeps the keys already known.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import aiohttp

from kvtrace.queryproxy.jwtcheck import PublicKey, TokenRejected, key_set
from kvtrace.queryproxy.settings import OidcSettings

log = logging.getLogger("kvtrace.queryproxy")
DISCOVERY_PATH = "/.well-known/openid-configuration"
FETCH_TIMEOUT_S = 10.0


class IssuerError(Exception):
    """The issuer's discovery document or JWKS cannot be fetched or is not usable."""


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifying context for the issuer: the system's CAs, or ``ca_file`` for a private issuer."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


class KeySet:
    def __init__(self, settings: OidcSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.keys: dict[str | None, PublicKey] = {}
        self.fetched_at: float | None = None  # monotonic time of the last fetch attempt
        self.loaded_at: float | None = None  # ... of the last successful one
        self._lock = asyncio.Lock()
        self._ssl = ssl_context(settings.ca_file)

    async def _json(self, url: str) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        try:
            async with self.session.get(
                url, ssl=self._ssl, timeout=timeout, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise IssuerError(f"GET {url}: HTTP {response.status}")
                value = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise IssuerError(f"GET {url}: {exc or type(exc).__name__}") from None
        if not isinstance(value, dict):
            raise IssuerError(f"GET {url}: expected a JSON object")
        return value

    async def fetch(self) -> None:
        """Discovery, then the JWKS; the new keys replace the old ones (IssuerError on failure)."""
        self.fetched_at = time.monotonic()
        issuer = self.settings.issuer
        discovery = await self._json(issuer.rstrip("/") + DISCOVERY_PATH)
        if discovery.get("issuer") != issuer:
            raise IssuerError(
                f"discovery names issuer {discovery.get('issuer')!r}, expected {issuer!r}"
            )
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
            raise IssuerError(f"discovery has no https jwks_uri (got {jwks_uri!r})")
        keys = key_set(await self._json(jwks_uri))
        if not keys:
            raise IssuerError(f"{jwks_uri} has no RS256/ES256 signing keys")
        self.keys, self.loaded_at = keys, time.monotonic()
        log.info("loaded %d signing key(s) of %s", len(keys), issuer)

    async def _refresh(self, asked_at: float) -> None:
        async with self._lock:
            if self.fetched_at is not None and self.fetched_at >= asked_at:
                return  # another request fetched meanwhile
            try:
                await self.fetch()
            except IssuerError as exc:
                log.warning("cannot refresh the signing keys of %s: %s", self.settings.issuer, exc)

    async def key(self, kid: str | None) -> PublicKey:
        """The key for ``kid`` (refetching once when unknown or stale), else TokenRejected."""
        now = time.monotonic()
        stale = self.loaded_at is None or now - self.loaded_at >= self.settings.max_age_s
        unknown = kid not in self.keys
        may_fetch = self.fetched_at is None or now - self.fetched_at >= self.settings.min_refresh_s
        if (stale or unknown) and may_fetch:
            await self._refresh(now)
        if kid in self.keys:
            return self.keys[kid]
        if self.loaded_at is None:
            raise TokenRejected("the issuer's signing keys are not available")
        raise TokenRejected(f"unknown key id {kid!r}")
