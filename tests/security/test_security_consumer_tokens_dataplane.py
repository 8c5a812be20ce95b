"""Per-consumer tokens against the real collector (docs/security.md): the rendered edge config reads the
token set the operator writes (``render/consumer_tokens.py``), updated the way the kubelet
updates a Secret volume (a new timestamped directory, the ``..data`` symlink swapped, the old
directory removed). A consumer added is accepted, a consumer removed is refused (401) within a
bounded poll while the others keep working, and the last consumer removed leaves a file that
accepts nobody (the extension keeps its old tokens when the file is empty)."""

from __future__ import annotations

import os
import secrets
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from test_security_telemetry_dataplane import managed_tls_stack, pipeline, post_traces

from kvtrace_operator.render import consumer_tokens
from kvtrace_operator.render.security import AUTH_DIR

pytestmark = pytest.mark.dataplane

RELOAD_TIMEOUT = 20.0


def kubelet_write(volume: Path, files: dict[str, str]) -> None:
    """Update a Secret volume as the kubelet's atomic writer does."""
    volume.mkdir(parents=True, exist_ok=True)
    data = volume / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    fresh = volume / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{secrets.token_hex(4)}"
    fresh.mkdir()
    for name, text in files.items():
        (fresh / name).write_text(text)
    staging = volume / "..data_tmp"
    os.symlink(fresh.name, staging)
    os.replace(staging, data)
    for name in files:
        link = volume / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    if old:
        for item in (volume / old).iterdir():
            item.unlink()
        (volume / old).rmdir()


def status(address: str, token: str, context: ssl.SSLContext) -> int:
    """An export with ``token`` over TLS (on by default), verifying the edge with ``context``."""
    return post_traces(address, {"Authorization": f"Bearer {token}"}, context)


def test_consumers_are_added_and_revoked_without_a_restart(
    collector: Any, jaeger: Any, poll: Any, tmp_path: Path
) -> None:
    volume = tmp_path / "auth"
    pipeline_token, orders, carts = (secrets.token_urlsafe(32) for _ in range(3))
    entries = [(pipeline_token, "pipeline"), (orders, "KVCluster/orders")]
    kubelet_write(volume, {"token": consumer_tokens.compose(entries, "unused")})
    pipe = pipeline(auth={"enabled": True})
    col, _, tls = managed_tls_stack(collector, jaeger, pipe, tmp_path, {AUTH_DIR: volume})
    address = col.endpoint("otlp/http")
    verified = ssl.create_default_context(cafile=str(tls.ca_file))
    pid = col.process.popen.pid
    assert (
        status(address, orders, verified) == 200
        and status(address, pipeline_token, verified) == 200
    )
    assert status(address, carts, verified) == 401

    # A KVCluster starts referencing the pipeline: its token is accepted.
    entries.append((carts, "KVCluster/carts"))
    kubelet_write(volume, {"token": consumer_tokens.compose(entries, "unused")})
    poll(
        lambda: status(address, carts, verified) == 200,
        timeout=RELOAD_TIMEOUT,
        message="the new consumer's token accepted",
    )

    # KVCluster orders is deleted: its token is revoked, the others keep working.
    started = time.monotonic()
    entries.remove((orders, "KVCluster/orders"))
    kubelet_write(volume, {"token": consumer_tokens.compose(entries, "unused")})
    poll(
        lambda: status(address, orders, verified) == 401,
        timeout=RELOAD_TIMEOUT,
        message="the revoked token refused",
    )
    revoked_after = time.monotonic() - started
    assert (
        status(address, carts, verified) == 200 and status(address, pipeline_token, verified) == 200
    )
    print(f"revocation took effect after {revoked_after:.2f}s")

    # No consumer left: the placeholder nobody holds, so nothing is accepted any more.
    kubelet_write(volume, {"token": consumer_tokens.compose([], secrets.token_urlsafe(32))})
    poll(
        lambda: status(address, carts, verified) == 401,
        timeout=RELOAD_TIMEOUT,
        message="the last token revoked",
    )
    assert status(address, pipeline_token, verified) == 401
    assert status(address, consumer_tokens.PLACEHOLDER_LABEL, verified) == 401
    assert col.process.popen.pid == pid and col.process.popen.poll() is None  # never restarted
