"""Transport security of real nodes: mutual TLS between peers, TLS and bearer tokens on the
client port, certificates and tokens re-read without restarts (docs/security.md, "The KV cluster").

Durations here (2 busy cores): each test 5-20 s.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kvharness import Harness, Node, http, wait_until

from kvnode.transport import frames
from kvtrace_operator import pki

pytestmark = pytest.mark.dataplane

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
TOKEN = "client-token-0123456789abcdef"


class Files:
    """The PEM files and token directory one cluster's nodes read (rewritten atomically)."""

    def __init__(self, root: Path, ips: list[str]):
        self.root = root
        self.ips = tuple(ips)
        self.ca = pki.make_ca("test CA", NOW, 30 * DAY)
        self.tokens = root / "tokens"
        self.tokens.mkdir(parents=True)
        self.write_token("app", TOKEN)
        self.write_leaf(self.ca, [self.ca])

    def write(self, name: str, text: str) -> None:
        tmp = self.root / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.root / name)

    def write_leaf(self, signer: pki.KeyPair, trusted: list[pki.KeyPair]) -> pki.KeyPair:
        leaf = pki.issue(signer, "kv", ["kv.test"], NOW, 10 * DAY, ip_addresses=self.ips)
        self.write("ca.crt", pki.bundle(*(ca.cert_pem for ca in trusted)))
        self.write("tls.key", leaf.key_pem)  # a reload between the two sees a mismatch and retries
        self.write("tls.crt", leaf.cert_pem)
        return leaf

    def write_token(self, label: str, token: str) -> None:
        (self.tokens / label).write_text(token + "\n")

    @staticmethod
    def env(root: Path) -> dict[str, str]:
        return {
            "KVNODE_TLS_CERT_FILE": str(root / "tls.crt"),
            "KVNODE_TLS_KEY_FILE": str(root / "tls.key"),
            "KVNODE_TLS_CA_FILE": str(root / "ca.crt"),
            "KVNODE_AUTH_TOKEN_DIR": str(root / "tokens"),
            "KVNODE_RELOAD_INTERVAL": "200ms",
        }

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.cert_pem)


def secure_cluster(
    kv_cluster: Callable[..., Harness], tmp_path: Path, count: int = 3
) -> tuple[Harness, Files]:
    """``count`` nodes with TLS and tokens; their leaf carries the harness's addresses."""
    root = tmp_path / "secrets"
    h = kv_cluster(0, **Files.env(root))
    files = Files(root, [f"127.0.{h.subnet}.{i + 2}" for i in range(count)])
    h.tls, h.token = files.client_context(), TOKEN
    h.start(count)
    return h, files


def peer_ping(node: Node, context: ssl.SSLContext | None) -> bytes:
    """A PING frame on the peer port (TLS with ``context``, or plain TCP): the answer's bytes,
    b"" when the node closed the connection without answering."""
    raw = socket.create_connection((node.ip, node.peer_port), timeout=5)
    try:
        sock: socket.socket = context.wrap_socket(raw, server_hostname=node.ip) if context else raw
        sock.sendall(frames.encode(7, frames.PING))
        return sock.recv(64)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        raw.close()


def test_peers_need_a_certificate_and_clients_a_token(
    kv_cluster: Callable[..., Harness], tmp_path: Path
) -> None:
    h, files = secure_cluster(kv_cluster, tmp_path)
    a, b = h.nodes[0], h.nodes[1]
    # Replication runs over mutual TLS: a QUORUM write through one node, read through another.
    assert a.put("k", b"v", "all")[0] == 204
    assert b.get("k", "all")[2] == b"v"

    # The peer port refuses whoever cannot present a certificate the bundle signed.
    member = ssl.create_default_context(cadata=files.ca.cert_pem)
    assert peer_ping(a, member) == b"", "no client certificate: refused"
    other_ca = pki.make_ca("impostor CA", NOW, DAY)
    impostor = pki.issue(other_ca, "kv", ["kv.test"], NOW, DAY, ip_addresses=files.ips)
    (tmp_path / "impostor.crt").write_text(impostor.cert_pem)
    (tmp_path / "impostor.key").write_text(impostor.key_pem)
    member.load_cert_chain(tmp_path / "impostor.crt", tmp_path / "impostor.key")
    assert peer_ping(a, member) == b"", "a certificate of another CA: refused"
    assert peer_ping(a, None) == b"", "plain TCP: refused"
    good = ssl.create_default_context(cadata=files.ca.cert_pem)
    leaf_dir = files.root
    good.load_cert_chain(leaf_dir / "tls.crt", leaf_dir / "tls.key")
    assert peer_ping(a, good) != b"", "a member's certificate: answered"

    # The client port: TLS, and a token for everything but the probes and the metrics.
    status, headers, body = http("GET", a.kv_url("k", "quorum"), context=h.tls)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), body
    assert http("GET", a.url + "/v1/cluster", context=h.tls)[0] == 401
    assert (
        http(
            "PUT",
            a.kv_url("k", None),
            b"x",
            context=h.tls,
            headers={"Authorization": "Bearer nope"},
        )[0]
        == 401
    )
    for path in ("/healthz", "/readyz", "/metrics"):
        assert http("GET", a.url + path, context=h.tls)[0] == 200, path
    assert a.metric("kvnode_unauthorized_total") == 3
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        http(
            "GET", a.url + "/healthz", context=ssl.create_default_context()
        )  # the system CAs do not know it
    assert b.get("k", "quorum")[2] == b"v", "nothing was written by the refused PUT"

    # A new client's token works once its file appears (re-read, no restart).
    files.write_token("second", "second-token-xyz")
    wait_until(
        lambda: (
            a.http("GET", "/v1/cluster", headers={"Authorization": "Bearer second-token-xyz"})[0]
            == 200
        ),
        10,
        what="the new token accepted",
    )


def served_leaf(node: Node) -> str:
    with socket.create_connection((node.ip, node.client_port), timeout=5) as raw:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(raw) as sock:
            der = sock.getpeercert(binary_form=True)
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der)


def test_rotation_under_load_keeps_every_acknowledged_write(
    kv_cluster: Callable[..., Harness], tmp_path: Path
) -> None:
    """The managed CA's rotation order (rotation.py): the new CA is trusted beside the old,
    then the leaves move to it, then the old CA leaves the bundle; QUORUM writers run
    throughout, on connections opened before and after each step."""
    h, files = secure_cluster(kv_cluster, tmp_path)
    acked: dict[str, bytes] = {}
    failures: list[str] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            key, value = f"rot/{n}/{i}", f"v{i}".encode()
            status, _, body = h.nodes[(n + i) % 3].put(key, value, "quorum")
            if status == 204:
                acked[key] = value
            else:
                failures.append(f"{key}: {status} {body[:200]!r}")
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        new_ca = pki.make_ca("test CA 2", NOW, 30 * DAY)
        steps = [(files.ca, [files.ca, new_ca]), (new_ca, [new_ca, files.ca]), (new_ca, [new_ca])]
        for signer, trusted in steps:
            before = {n.id: n.metric("kvnode_credentials_reloads_total") for n in h.nodes}
            leaf = files.write_leaf(signer, trusted)
            wait_until(
                lambda: all(
                    n.metric("kvnode_credentials_reloads_total") > before[n.id]  # noqa: B023 - this step's
                    for n in h.nodes
                ),
                10,
                what="every node reloaded",
            )
            time.sleep(
                0.5
            )  # writes keep running on the reloaded credentials (bounded by the writers' count)
            h.tls = ssl.create_default_context(cadata=pki.bundle(*(ca.cert_pem for ca in trusted)))
            assert all(served_leaf(n) == leaf.cert_pem for n in h.nodes), (
                "new connections get the new leaf"
            )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures, failures[:5]
    assert len(acked) > 50, f"only {len(acked)} writes during the rotation"
    for node in h.nodes:  # over new connections, verified by the new CA only
        lost = [k for k, v in acked.items() if node.get(k, "quorum")[2] != v]
        assert not lost, f"{node.id}: {len(lost)} acknowledged writes unreadable, e.g. {lost[:3]}"
