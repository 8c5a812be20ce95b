"""Endpoint map: cluster names → local loopback addresses (development and tests only).

KWOK pods run nothing, so the pod runner starts their processes on the host, each on its
own loopback address. Cluster DNS names (``NAME.NS.svc``, ``POD.SVC.NS.svc.cluster.local``,
pod IPs, cluster IPs) do not resolve on the host; the runner writes a JSON file mapping
``"host:port"`` to ``"127.x.y.z:port"`` and exports its path as ``KVTRACE_ENDPOINT_MAP``
to every process it starts. Programs that honour it call :func:`resolve` before
connecting. Nothing in production sets the variable, so there it is a no-op.

This module is stdlib-only so the KV node, the CLI and the operator can all use it.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV = "KVTRACE_ENDPOINT_MAP"

_cache: dict[str, tuple[tuple[int, int, int], dict[str, str]]] = {}
_cache_lock = threading.Lock()


def load(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The current map (re-read when the file changes); empty when unset or missing."""
    path = path or os.environ.get(ENV)
    if not path:
        return {}
    key = str(path)
    try:
        st = os.stat(key)
    except OSError:
        return {}
    with _cache_lock:
        cached = _cache.get(key)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # the writer replaces the file
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            data = json.loads(Path(key).read_text())
        except (OSError, ValueError):
            return cached[1] if cached else {}
        mapping = {str(k).lower(): str(v) for k, v in data.items()}
        _cache[key] = (stamp, mapping)
        return mapping


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def resolve(host: str, port: int, path: str | os.PathLike[str] | None = None) -> tuple[str, int]:
    """Where to connect for ``host:port``: the mapped address, or the input unchanged."""
    target = load(path).get(f"{host.lower().rstrip('.')}:{port}")
    return _split(target) if target else (host, port)


def resolve_address(address: str, path: str | os.PathLike[str] | None = None) -> str:
    """``"host:port"`` → mapped ``"ip:port"`` (or unchanged)."""
    host, port = _split(address)
    new_host, new_port = resolve(host, port, path)
    return f"{new_host}:{new_port}"


def resolve_url(url: str, path: str | os.PathLike[str] | None = None) -> str:
    """Rewrite the host and port of ``http(s)://host:port/...`` through the map."""
    parts = urlsplit(url)
    if not parts.hostname:
        return url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host, new_port = resolve(parts.hostname, port, path)
    if (host, new_port) == (parts.hostname, port):
        return url
    return urlunsplit(parts._replace(netloc=f"{host}:{new_port}"))


class EndpointMapFile:
    """The writer side: several owners (pod runners) contribute entries to one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._owners: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._written: dict[str, str] | None = None
        self.update("_", {})

    def update(self, owner: str, entries: dict[str, str]) -> None:
        with self._lock:
            self._owners[owner] = dict(entries)
            self._write()

    def remove(self, owner: str) -> None:
        with self._lock:
            self._owners.pop(owner, None)
            self._write()

    def entries(self) -> dict[str, str]:
        with self._lock:
            return self._merged()

    def _merged(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for owner in sorted(self._owners):
            merged.update(self._owners[owner])
        return dict(sorted(merged.items()))

    def _write(self) -> None:
        merged = self._merged()
        if merged == self._written:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".endpoints-", dir=self.path.parent)
        with os.fdopen(fd, "w") as handle:
            json.dump(merged, handle, indent=1)
        os.replace(tmp, self.path)  # atomic: readers never see half a file
        self._written = merged
