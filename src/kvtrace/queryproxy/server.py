"""The proxy's edge (aiohttp): authenticate every request, forward the accepted ones to
Jaeger's query server on loopback, answer the others 401 with ``WWW-Authenticate``.

- Accepted: a static token of ``--tokens-file`` (both modes; re-read when the file changes,
  as the kubelet swaps a Secret volume's files), or in ``oidc`` mode a JWT the issuer signed
  (:mod:`kvtrace.queryproxy.jwtcheck`, keys from :mod:`kvtrace.queryproxy.jwks`).
- Forwarded: method, path and query, headers except hop-by-hop ones and ``Authorization``
  (Jaeger never sees the token); the answer streams back unchanged (compressed bodies
  stay compressed).
- Refused: 401, ``WWW-Authenticate: Bearer realm="jaeger-query"``, plus RFC 6750
  ``error="invalid_token"`` and the reason when a token was presented; a JSON body
  ``{"error": "unauthorized", "message": ...}``. Logged with the client address and the
  reason, never the token.
- TLS (``--tls-cert-file``/``--tls-key-file``): the certificate is re-read when its files
  change, so a renewed leaf is served without a restart.
- ``GET /healthz``: the kubelet's liveness and readiness probes. Answered by the proxy
  itself, without a token (the kubelet has none) and without asking Jaeger (Jaeger's own
  container has its probes): 200 ``ok`` while the event loop serves requests. Nothing else
  is answered without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from kvtrace.queryproxy import tokens as tokens_mod
from kvtrace.queryproxy.headers import challenge, request_headers, response_headers
from kvtrace.queryproxy.jwks import IssuerError, KeySet
from kvtrace.queryproxy.jwtcheck import TokenRejected, check_claims, parse, verify_signature
from kvtrace.queryproxy.settings import ProxySettings, is_loopback

log = logging.getLogger("kvtrace.queryproxy")

HEALTH_PATH = "/healthz"  # render/query_proxy.py probes it (a unit test checks they agree)
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120)
MAX_BODY = 1 << 20


def _stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)  # follows the symlinks of a Secret volume
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class WatchedFiles:
    """Notices when any of ``paths`` changed (device, inode, mtime, size: the kubelet swaps a
    Secret volume's files by symlink); :meth:`due` paces the checks to one per ``interval_s``."""

    def __init__(self, paths: tuple[str, ...], interval_s: float) -> None:
        self.paths, self.interval_s = paths, interval_s
        self._stamps: tuple[tuple[int, int, int, int], ...] | None = None
        self._checked = 0.0

    def changed(self) -> bool:
        """Whether the files differ from the last call that returned True (OSError when unreadable)."""
        stamps = tuple(_stamp(path) for path in self.paths)
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        return True

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._checked < self.interval_s:
            return False
        self._checked = now
        return True


class TokenFile:
    def __init__(self, path: str, interval_s: float) -> None:
        self.path = path
        self.digests: tuple[bytes, ...] = ()
        self._watch = WatchedFiles((path,), interval_s)

    def load(self) -> None:
        """Read the file now (OSError when it cannot be read)."""
        self._watch.changed()
        with open(self.path, encoding="utf-8") as handle:
            found = tokens_mod.parse_tokens(handle.read())
        self.digests = tokens_mod.digests(found)
        log.info("loaded %d token(s) from %s", len(found), self.path)
        for index in tokens_mod.unusable(found):
            log.warning(
                "token %d of %s has characters a bearer token cannot carry (letters, digits and "
                "-._~+/ only): it never matches",
                index,
                self.path,
            )
        if not found:
            log.warning("%s holds no token: only OIDC tokens (if any) are accepted", self.path)

    def refresh(self) -> None:
        """Re-read when changed; an unreadable file keeps the tokens already loaded."""
        if not self._watch.due():
            return
        try:
            if self._watch.changed():
                self.load()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning(
                "cannot re-read %s (keeping %d token(s)): %s", self.path, len(self.digests), exc
            )


class LogBudget:
    """At most ``burst`` lines per ``window_s`` (refusals: a flood of bad requests must not
    flood the log); the first line of the next window says how many were left out."""

    def __init__(self, burst: int = 30, window_s: float = 60.0) -> None:
        self.burst, self.window_s = burst, window_s
        self.window_start = float("-inf")
        self.used = self.left_out = 0

    def take(self, now: float) -> tuple[bool, int]:
        """(whether to log this line, how many were left out before it in the last window)."""
        earlier = 0
        if now - self.window_start >= self.window_s:
            earlier, self.left_out = self.left_out, 0
            self.window_start, self.used = now, 0
        if self.used >= self.burst:
            self.left_out += 1
            return False, 0
        self.used += 1
        return True, earlier


class Authenticator:
    def __init__(
        self, settings: ProxySettings, token_file: TokenFile | None, keys: KeySet | None
    ) -> None:
        self.settings, self.token_file, self.keys = settings, token_file, keys

    async def reason_to_refuse(self, header: str | None) -> tuple[str, bool] | None:
        """None when ``header`` authenticates the request, else (reason, whether a token was presented)."""
        token = tokens_mod.bearer(header)
        if token is None:
            return (
                ("no bearer token", False)
                if not header
                else ("expected Authorization: Bearer TOKEN", True)
            )
        if self.token_file is not None:
            self.token_file.refresh()
            if tokens_mod.matches(token, self.token_file.digests):
                return None
        if self.keys is None or token.count(".") != 2:
            return "unknown token", True
        oidc = self.settings.oidc
        assert oidc is not None
        try:
            jws = parse(token)
            verify_signature(jws, await self.keys.key(jws.kid))
            check_claims(
                jws.claims,
                issuer=oidc.issuer,
                audience=oidc.audience,
                now=time.time(),
                leeway_s=oidc.leeway_s,
                required_claim=oidc.required_claim,
            )
        except TokenRejected as exc:
            return str(exc), True
        return None


def unauthorized(realm: str, reason: str, presented: bool) -> web.Response:
    body = json.dumps(
        {
            "error": "unauthorized",
            "message": f"Jaeger's query API needs a valid bearer token: {reason}",
        }
    )
    return web.Response(
        status=401,
        text=body,
        content_type="application/json",
        headers={
            "WWW-Authenticate": challenge(realm, reason, presented),
            "Cache-Control": "no-store",
        },
    )


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


def _client(request: web.Request) -> str:
    return str(request.remote or "?")


async def _forward(request: web.Request) -> web.StreamResponse:
    app = request.app
    refused = await app["authenticator"].reason_to_refuse(request.headers.get("Authorization"))
    if refused is not None:
        reason, presented = refused
        allowed, left_out = app["refusal_log"].take(time.monotonic())
        if left_out:
            log.info(
                "%d more refusal(s) not logged in the last %.0fs",
                left_out,
                app["refusal_log"].window_s,
            )
        if allowed:
            log.info(
                "refused %s %s from %s: %s", request.method, request.path, _client(request), reason
            )
        return unauthorized(app["settings"].realm, reason, presented)
    headers = CIMultiDict(request_headers(request.headers.items()))
    body = await request.read() if request.body_exists else None
    url = URL(app["settings"].upstream + request.raw_path, encoded=True)
    session: aiohttp.ClientSession = app["upstream"]
    response: web.StreamResponse | None = None
    try:
        async with session.request(
            request.method, url, headers=headers, data=body, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in response_headers(upstream.headers.items()):
                response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
        log.warning("upstream %s: %s", app["settings"].upstream, exc or type(exc).__name__)
        if response is not None and response.prepared:
            raise  # cut short: aiohttp drops the connection, so the client cannot take it as complete
        return web.Response(
            status=502,
            content_type="application/json",
            text=json.dumps(
                {"error": "bad_gateway", "message": "Jaeger's query server did not answer"}
            ),
        )


def server_ssl(settings: ProxySettings) -> ssl.SSLContext | None:
    if not settings.tls_cert_file or not settings.tls_key_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


async def _reload_certificate(settings: ProxySettings, context: ssl.SSLContext) -> None:
    """New connections get the renewed certificate (load_cert_chain on the live context)."""
    assert settings.tls_cert_file and settings.tls_key_file
    watch = WatchedFiles(
        (settings.tls_cert_file, settings.tls_key_file), settings.reload_interval_s
    )
    watch.changed()
    while True:
        await asyncio.sleep(settings.reload_interval_s)
        try:
            if watch.changed():
                context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
                log.info("reloaded the serving certificate %s", settings.tls_cert_file)
        except (OSError, ssl.SSLError) as exc:  # e.g. the two files caught mid-update: next round
            log.warning("cannot reload the serving certificate (keeping the current one): %s", exc)


def build_app(settings: ProxySettings, context: ssl.SSLContext | None = None) -> web.Application:
    """The proxy application (its sessions and background tasks live in ``cleanup_ctx``)."""
    token_file = (
        TokenFile(settings.tokens_file, settings.reload_interval_s)
        if settings.tokens_file
        else None
    )
    if token_file is not None:
        token_file.load()  # unreadable at start: fail, naming the file
    if not is_loopback(URL(settings.upstream).host or ""):
        log.warning(
            "upstream %s is not a loopback address: requests could reach Jaeger without this proxy",
            settings.upstream,
        )
    app = web.Application(client_max_size=MAX_BODY)
    app["settings"] = settings
    app["refusal_log"] = LogBudget()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        upstream = aiohttp.ClientSession(auto_decompress=False, timeout=UPSTREAM_TIMEOUT)
        issuer = aiohttp.ClientSession() if settings.oidc else None
        keys = KeySet(settings.oidc, issuer) if settings.oidc and issuer else None
        app["upstream"] = upstream
        app["authenticator"] = Authenticator(settings, token_file, keys)
        if keys is not None:
            try:
                await keys.fetch()
            except IssuerError as exc:  # tried again at the first token
                log.warning(
                    "cannot fetch the signing keys of %s yet: %s",
                    settings.oidc.issuer if settings.oidc else "",
                    exc,
                )
        tasks = (
            [asyncio.create_task(_reload_certificate(settings, context))]
            if context is not None
            else []
        )
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await upstream.close()
        if issuer is not None:
            await issuer.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get(
        HEALTH_PATH, _health, allow_head=False
    )  # before the catch-all: routes match in order
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


def run(settings: ProxySettings) -> None:
    """Serve until SIGTERM/SIGINT."""
    context = server_ssl(settings)
    app = build_app(settings, context)
    scheme = "https" if context else "http"
    log.info(
        "%s mode, listening on %s://%s:%d, forwarding to %s",
        settings.mode,
        scheme,
        settings.listen_host,
        settings.listen_port,
        settings.upstream,
    )
    web.run_app(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        ssl_context=context,
        access_log=None,
        print=None,
        shutdown_timeout=5,
    )
