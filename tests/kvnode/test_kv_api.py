"""The client API on a real 3-node cluster: consistency levels, versions, bad input, metrics."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Callable

import pytest
from kvharness import Harness, http, wait_until

from kvnode.transport import frames

pytestmark = pytest.mark.dataplane


def test_every_consistency_level_and_read_after_write(kv_cluster: Callable[..., Harness]) -> None:
    a, b, c = kv_cluster(3).nodes
    for i, level in enumerate(["one", "quorum", "all"]):
        status, headers, _ = a.put(f"level/{level}", f"v{i}".encode(), level)
        assert status == 204, level
        version = int(headers["X-KV-Version"])
        # read-after-write through other coordinators: W + R > N
        read_level = {"one": "all", "quorum": "quorum", "all": "one"}[level]
        for node in (b, c):
            status, headers, body = node.get(f"level/{level}", read_level)
            assert (status, body) == (200, f"v{i}".encode()), (level, node.id)
            assert int(headers["X-KV-Version"]) == version
    # overwrite: versions grow, last write wins everywhere
    v1 = int(a.put("k", b"1")[1]["X-KV-Version"])
    v2 = int(b.put("k", b"2")[1]["X-KV-Version"])
    assert v2 > v1
    assert c.get("k", "all")[2] == b"2"
    # delete leaves a tombstone: 404 everywhere, with its version
    status, headers, _ = c.delete("k", "all")
    assert status == 204 and int(headers["X-KV-Version"]) > v2
    for node in (a, b, c):
        status, headers, body = node.get("k", "one")
        assert status == 404 and json.loads(body)["error"] == "not_found"
    assert a.get("never-written")[0] == 404
    # a key with slashes, spaces and unicode
    assert a.put("dir/sub key/é", b"x")[0] == 204
    assert b.get("dir/sub key/é")[2] == b"x"


def test_bad_input_gets_json_errors_and_the_node_keeps_serving(
    kv_cluster: Callable[..., Harness],
) -> None:
    h = kv_cluster(3, KVNODE_MAX_VALUE_SIZE="1KiB", KVNODE_MAX_KEY_SIZE="64")
    a = h.nodes[0]
    cases = [
        (a.put("k", b"x" * 1025), 413, "value_too_large"),
        (a.put("k" * 65, b"x"), 413, "key_too_large"),
        (a.put("k", b"x", "two"), 400, "invalid_consistency"),
        (http("PUT", a.url + "/v1/kv/", b"x"), 400, "invalid_key"),
        (http("GET", a.url + "/v1/kv/a%0Ab"), 400, "invalid_key"),
    ]
    for (status, _, body), want_status, want_code in cases:
        assert status == want_status
        err = json.loads(body)
        assert err["error"] == want_code and err["message"]
    assert a.get("k")[0] == 404, "no rejected write was applied"
    # a chunked upload over the limit is cut off too
    with socket.create_connection((a.ip, a.client_port), timeout=5) as s:
        s.sendall(b"PUT /v1/kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        s.sendall(b"800\r\n" + b"y" * 0x800 + b"\r\n0\r\n\r\n")
        assert b" 413 " in s.recv(4096).split(b"\r\n")[0] + b" "
    assert a.get("chunked")[0] == 404
    # garbage on the peer port: the connection is dropped, the node keeps serving
    with socket.create_connection((a.ip, a.peer_port), timeout=5) as s:
        s.sendall(b"\xff\xff\xff\xffthis is not a frame")
        s.settimeout(5)
        assert s.recv(100) == b""
    with socket.create_connection((a.ip, a.peer_port), timeout=5) as s:  # a well-framed bad message
        s.settimeout(5)
        # after the handshake (a first frame without one is a version-1 peer, refused since 3)
        s.sendall(frames.encode(0, frames.HELLO, frames.encode_hello(frames.PROTOCOL, "test")))
        hello = s.recv(200)
        assert hello[4:9] == b"\x00\x00\x00\x00" + bytes([frames.OK]), hello
        s.sendall(b"\x00\x00\x00\x0b\x00\x00\x00\x07\x01\x00\x00\x00\xff\xff\xff")
        reply = s.recv(200)
        assert reply[4:9] == b"\x00\x00\x00\x07\x81" and b"bad request" in reply, reply
    assert a.put("after", b"ok")[0] == 204 and h.nodes[1].get("after")[2] == b"ok"
    assert a.metric("kvnode_peer_requests_total") >= 1


def test_unreachable_hanging_and_garbage_peers_are_bounded_503s(
    kv_cluster: Callable[..., Harness],
) -> None:
    """A member that hangs and one that answers garbage: ALL writes fail fast and name them."""
    h = kv_cluster(
        1, KVNODE_REPLICATION_FACTOR="3", KVNODE_PEER_TIMEOUT="500ms", KVNODE_HINTED_HANDOFF="false"
    )
    a = h.nodes[0]
    hang = socket.create_server(("127.0.0.1", 0))
    garbage = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve_garbage() -> None:
        garbage.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = garbage.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.sendall(b"\x00\x00\x00\x0bnot a valid frame at all")
            conn.close()

    t = threading.Thread(target=serve_garbage, daemon=True)
    t.start()
    try:
        # the bad peers are members from the start (added by a change of the peers file they
        # would never take part in it, and the old ring, a alone, would stay authoritative)
        a.terminate()
        h.peers_file.write_text(
            f"{a.peer}\nhang=127.0.0.1:{hang.getsockname()[1]}\ngarbage=127.0.0.1:{garbage.getsockname()[1]}\n"
        )
        a.start()
        assert len(a.cluster()["members"]) == 3
        # QUORUM needs one of the two bad peers: the answer waits for both, bounded by the timeout
        status, _, body = a.put("x", b"1", "quorum")
        assert status == 503
        err = json.loads(body)
        assert err["error"] == "unavailable" and err["required"] == 2 and err["acked"] == 1
        assert "timeout" in err["failures"]["hang"]
        assert (
            "protocol error" in err["failures"]["garbage"]
            or "connection lost" in err["failures"]["garbage"]
        )
        # ALL fails as soon as any replica fails
        status, _, body = a.put("x", b"2", "all")
        assert status == 503 and json.loads(body)["required"] == 3
        assert a.put("y", b"1", "one")[0] == 204
        assert a.get("y", "one")[2] == b"1"
        assert a.metric("kvnode_replication_failures_total") >= 2
    finally:
        stop.set()
        t.join(5)
        hang.close()
        garbage.close()


def test_health_metrics_cluster_view_and_faults(kv_cluster: Callable[..., Harness]) -> None:
    h = kv_cluster(3, KVNODE_FAULTS="error:fail/,delay:slow/:300ms")
    a = h.nodes[0]
    assert http("GET", a.url + "/healthz")[0] == 200
    assert http("GET", a.url + "/readyz")[0] == 200
    view = a.cluster()
    assert view["id"] == a.id and [m["id"] for m in view["members"]] == [n.id for n in h.nodes]
    assert sum(view["ring"]["ownership"].values()) == pytest.approx(1.0, abs=0.01)
    status, _, body = a.put("fail/1", b"x")
    assert status == 500 and json.loads(body)["error"] == "injected_fault"
    assert a.get("fail/1")[0] == 500
    loop = asyncio.new_event_loop()
    try:
        started = loop.time()
        assert a.put("slow/1", b"x")[0] == 204
        assert loop.time() - started >= 0.29
    finally:
        loop.close()
    a.get("slow/1")
    text = http("GET", a.url + "/metrics")[2].decode()
    for name in (
        "kvnode_requests_total",
        "kvnode_request_duration_seconds_bucket",
        "kvnode_replication_failures_total",
        "kvnode_hints_pending",
        "kvnode_anti_entropy_repairs_total",
    ):
        assert f"# TYPE {name.removesuffix('_bucket')}" in text
    assert 'kvnode_requests_total{operation="write",consistency="quorum",code="500"} 1' in text
    assert a.terminate() == 0, "SIGTERM shuts down cleanly"


def test_kv_cli_and_bench_against_a_cluster(kv_cluster: Callable[..., Harness]) -> None:
    import subprocess
    import sys
    from pathlib import Path

    kvtrace = str(Path(sys.executable).parent / "kvtrace")
    a, b, _ = kv_cluster(3).nodes

    def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([kvtrace, *args], input=stdin, capture_output=True, timeout=60)

    put = run("kv", "put", "--endpoint", a.url, "cli/key", "-", stdin=b"from stdin")
    assert put.returncode == 0 and int(json.loads(put.stdout)["version"]) > 0
    got = run("kv", "get", "--endpoint", b.url, "--consistency", "all", "cli/key")
    assert (got.returncode, got.stdout) == (0, b"from stdin")
    assert run("kv", "delete", "--endpoint", b.url, "cli/key").returncode == 0
    missing = run("kv", "get", "--endpoint", a.url, "cli/key")
    assert missing.returncode == 1 and b"not_found" in missing.stderr
    bench = run(
        "bench",
        "--endpoint",
        a.url,
        "--endpoint",
        b.url,
        "--ops",
        "300",
        "--duration",
        "20",
        "--clients",
        "4",
        "--keys",
        "50",
        "--distribution",
        "zipfian",
    )
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout.splitlines()[0])
    assert (
        result["ops"] == 300 and result["errors"] == 0 and result["p99_ms"] >= result["p50_ms"] > 0
    )
    assert "ops/s" in bench.stdout.decode()
    # A timed run reports progress on stderr while it runs (a line every 5 s off a terminal).
    # The line comes at the first report 5 s in, which a busy event loop may delay by a second
    # or two: the run lasts 8 s so that it always falls inside it.
    timed = run("bench", "--endpoint", a.url, "--duration", "8", "--clients", "2", "--keys", "50")
    assert timed.returncode == 0, timed.stderr
    assert re.search(
        rb"^kvtrace bench: +[5-7]\.\d/8 s, [\d,]+ operations \([\d,]+/s\), 0 errors$",
        timed.stderr,
        re.M,
    ), timed.stderr


def test_values_at_the_default_size_limit_replicate(kv_cluster: Callable[..., Harness]) -> None:
    # What is tested is the size, not the speed: three 1.5 MiB writes to every member (an
    # fsync of each on a disk shared with a loaded machine) once took longer than the harness's
    # 5 s peer bound at load average 16, and the write was refused (503) as the bound says.
    a, b, c = kv_cluster(3, KVNODE_PEER_TIMEOUT="30s").nodes
    big = bytes(range(256)) * (1536 * 4)  # exactly 1.5 MiB, the default limit
    assert len(big) == 1536 * 1024
    for i in range(3):
        assert a.put(f"big/{i}", big, "all")[0] == 204
    assert c.get("big/2", "all")[2] == big
    assert b.put("big/over", big + b"x")[0] == 413


def test_a_node_without_members_is_not_ready_and_refuses_operations(
    kv_cluster: Callable[..., Harness],
) -> None:
    h = kv_cluster(1)
    a = h.nodes[0]
    h.peers_file.unlink()
    a.terminate()
    a.start(wait=False)
    wait_until(lambda: http("GET", a.url + "/healthz", timeout=2)[0] == 200, 20, what="alive")
    assert http("GET", a.url + "/readyz")[0] == 503
    status, _, body = a.put("k", b"v")
    assert status == 503 and "no members" in json.loads(body)["message"]
    assert a.get("k")[0] == 503
    h.write_peers([a])  # the operator writes the file: the node picks it up
    a.wait_ready()
    assert a.put("k", b"v")[0] == 204 and a.get("k")[2] == b"v"
