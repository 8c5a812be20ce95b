"""TLS contexts and client tokens of a node, re-read from their files when they change.

- Peer port (7071): mutual TLS. The server requires a client certificate that chains to the CA
  bundle (a peer without one is refused during the handshake); the peer client presents the
  same leaf and verifies the server's name (the host of the peers file) against the bundle.
- Client port (7070): TLS with the same leaf (clients verify it with the bundle); clients
  authenticate with ``Authorization: Bearer TOKEN`` (one token per file of the token
  directory, the file name is the client's label), checked at the routing boundary
  (http_api.py), not here.

Rotation without restarts: ``refresh()`` (called every ``--reload-interval``) compares the
files' stamps and, when one changed, builds new contexts from them. Listening sockets keep
one *dispatch* context whose SNI callback hands every new handshake the current context, so
new connections get the new leaf and bundle, established ones keep theirs. Files that do not
load (a half-written rotation) keep the previous contexts and are retried at the next tick.

Imports only the standard library: no replication, storage or process module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("kvnode.credentials")

Stamp = tuple[tuple[str, int, int, int], ...]


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files: the node's leaf (``cert``, ``key``) and the CA bundle it trusts (``ca``)."""

    cert: str
    key: str
    ca: str


def _stamp(paths: list[str]) -> Stamp:
    """(path, inode, mtime, size) of each file after following symlinks (the kubelet swaps a
    ``..data`` symlink); a missing file stamps as zeros."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((path, st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((path, 0, 0, 0))
    return tuple(out)


def server_context(files: TlsFiles, require_client_cert: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert, files.key)
    ctx.load_verify_locations(cafile=files.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """A peer client: verifies the server against the bundle and presents the node's leaf."""
    ctx = ssl.create_default_context(cafile=files.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


def read_tokens(directory: str) -> dict[bytes, str]:
    """sha256(token) -> label (the file name) for every non-empty file of ``directory``
    (dot-entries skipped: the kubelet's ``..data`` bookkeeping)."""
    tokens: dict[bytes, str] = {}
    for entry in sorted(Path(directory).iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        token = entry.read_text(encoding="utf-8").strip()
        if token and not any(ch.isspace() for ch in token):
            tokens[hashlib.sha256(token.encode()).digest()] = entry.name
    return tokens


def _dir_stamp(directory: str) -> Stamp:
    try:
        names = sorted(e.name for e in Path(directory).iterdir() if not e.name.startswith("."))
    except OSError:
        return ()
    return _stamp([os.path.join(directory, name) for name in names])


class Credentials:
    """The node's current TLS contexts and accepted tokens (None/empty: that part is off)."""

    def __init__(self, tls: TlsFiles | None, token_dir: str | None):
        self.tls = tls
        self.token_dir = token_dir
        self.peer_server: ssl.SSLContext | None = None
        self.client_server: ssl.SSLContext | None = None
        self.peer_client: ssl.SSLContext | None = None
        self.tokens: dict[bytes, str] = {}
        self.reloads = 0
        self._tls_stamp: Stamp = ()
        self._token_stamp: Stamp = ()
        if tls is not None:
            self._tls_stamp = _stamp([tls.cert, tls.key, tls.ca])
            self._load_tls(tls)  # errors here are the caller's: the node does not start
        if token_dir is not None:
            self._token_stamp = _dir_stamp(token_dir)
            self.tokens = read_tokens(token_dir)

    @property
    def auth(self) -> bool:
        return self.token_dir is not None

    def _load_tls(self, tls: TlsFiles) -> None:
        peer_server = server_context(tls, require_client_cert=True)
        client_server = server_context(tls, require_client_cert=False)
        peer_client = client_context(tls)
        self.peer_server, self.client_server, self.peer_client = (
            peer_server,
            client_server,
            peer_client,
        )

    def listening(self, peer: bool) -> ssl.SSLContext | None:
        """The context a listening socket keeps: every handshake switches to the current one."""
        if self.tls is None:
            return None
        ctx = server_context(self.tls, require_client_cert=peer)

        def current(
            sslobj: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
        ) -> None:
            latest = self.peer_server if peer else self.client_server
            if latest is not None and latest is not sslobj.context:
                sslobj.context = latest

        ctx.sni_callback = current
        return ctx

    def token_label(self, authorization: str | None) -> str | None:
        """The label of the client whose token ``Authorization: Bearer TOKEN`` carries, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.tokens.get(hashlib.sha256(token.strip().encode()).digest())

    def refresh(self) -> bool:
        """Re-read what changed on disk; True when something new was loaded."""
        changed = False
        if self.tls is not None:
            stamp = _stamp([self.tls.cert, self.tls.key, self.tls.ca])
            if stamp != self._tls_stamp:
                try:
                    self._load_tls(self.tls)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    log.warning(
                        "TLS files changed but do not load (kept the previous ones, retrying): %s",
                        exc,
                    )
                else:
                    self._tls_stamp = stamp
                    changed = True
                    log.info("TLS certificate and CA bundle reloaded from %s", self.tls.cert)
        if self.token_dir is not None:
            stamp = _dir_stamp(self.token_dir)
            if stamp != self._token_stamp:
                try:
                    tokens = read_tokens(self.token_dir)
                except (OSError, UnicodeDecodeError) as exc:
                    log.warning(
                        "client tokens in %s do not load (kept the previous ones): %s",
                        self.token_dir,
                        exc,
                    )
                else:
                    self.tokens, self._token_stamp = tokens, stamp
                    changed = True
                    log.info("client tokens reloaded: %d client(s)", len(tokens))
        self.reloads += changed
        return changed
