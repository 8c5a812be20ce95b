"""benchmarks/etcdload, benchmarks/kv.py's Go load generator, against real servers on loopback:
etcd's gRPC path (its official Go client) and its JSON gateway on a 3-member etcd, and
kvtrace's HTTP API on 3 kvtrace nodes; built from the tool cache (compiled there first when
cold), ~2 s of puts and reads each, every one answered, the puts checked on the servers."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import kv  # benchmarks/kv.py, on sys.path above

from kvnode.bench import BenchConfig
from kvtrace.devstack.pytest_plugin import require_binaries

pytestmark = pytest.mark.dataplane

KEYS = 200


@pytest.fixture(scope="module")
def etcdload() -> Path:
    return kv.build_etcdload()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Three etcd members on 127.0.231.x (the client URLs)."""
    require_binaries("etcd")
    binary = kv.find_etcd()
    assert binary is not None
    procs, endpoints = kv.start_etcd(binary, tmp_path_factory.mktemp("etcd"), 231)
    try:
        yield endpoints
    finally:
        kv.stop(procs)


@pytest.fixture(scope="module")
def kvtrace_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Three kvtrace nodes on 127.0.232.x, untraced (the client URLs)."""
    sink = kv.Sink()
    try:
        procs, endpoints, _ = kv.start_kvtrace(
            tmp_path_factory.mktemp("kvtrace"), 232, kv.TRACING["off"], sink
        )
        try:
            yield endpoints
        finally:
            kv.stop(procs)
    finally:
        sink.close()


def run_etcdload(etcdload: Path, endpoints: list[str], api: str, prefix: str) -> kv.Result:
    """~2 s of an even mix of puts and reads by 8 clients over ``api``, every key preloaded
    first; the run must have answered every operation."""
    cfg = BenchConfig(
        endpoints=endpoints,
        clients=8,
        duration=2.0,
        keys=KEYS,
        write_ratio=0.5,
        target="kvtrace" if api == "kvtrace" else "etcd",
        key_prefix=prefix,
        preload=True,
    )
    proc = subprocess.run(
        kv.etcdload_command(etcdload, cfg, api), capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0, proc.stderr
    result = kv.parse_etcdload(proc.stdout)
    assert result.errors == 0, result.error_samples
    assert result.ops > 0 and result.ops_per_s > 0
    assert result.by_operation["write"]["ops"] > 0 and result.by_operation["read"]["ops"] > 0
    assert result.by_operation["write"]["ops"] + result.by_operation["read"]["ops"] == result.ops
    assert 1.9 <= result.seconds <= 10
    assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms
    return result


def key_count(endpoint: str, prefix: str) -> int:
    """Keys under ``prefix``, asked through the JSON gateway (not the path under test)."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {"key": b64encode(prefix.encode()).decode(), "count_only": True}
    body["range_end"] = b64encode(end.encode()).decode()
    request = urllib.request.Request(f"{endpoint}/v3/kv/range", json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(json.load(resp).get("count", 0))


def test_puts_and_linearizable_ranges_over_grpc_all_succeed(
    etcdload: Path, etcd: list[str]
) -> None:
    result = run_etcdload(etcdload, etcd, "grpc", "etcdload-test/")
    assert result.target == "etcd-grpc"
    # one connection per member by default, the clients multiplexed over them
    assert result.by_operation["grpc_connections"] == {"value": 3}
    # the puts reached etcd: the preload wrote every key of the key space
    assert key_count(etcd[0], "etcdload-test/") == KEYS


def test_puts_and_ranges_through_the_json_gateway_all_succeed(
    etcdload: Path, etcd: list[str]
) -> None:
    result = run_etcdload(etcdload, etcd, "etcd-json", "etcdload-json/")
    assert result.target == "etcd-json"
    # over HTTP every client has its own keep-alive connection
    assert result.by_operation["grpc_connections"] == {"value": 8}
    assert key_count(etcd[1], "etcdload-json/") == KEYS


def test_quorum_writes_and_reads_through_kvtraces_api_all_succeed(
    etcdload: Path, kvtrace_nodes: list[str]
) -> None:
    # a "/" in a key travels percent-encoded
    result = run_etcdload(etcdload, kvtrace_nodes, "kvtrace", "etcdload/kv/")
    assert result.target == "kvtrace"
    # every key was written (3 members, N=3: each holds every key) with a 100-byte value
    for endpoint in kvtrace_nodes:
        with urllib.request.urlopen(f"{endpoint}/v1/cluster", timeout=10) as resp:
            assert json.load(resp)["keys"] == KEYS
    url = f"{kvtrace_nodes[2]}/v1/kv/etcdload%2Fkv%2F{KEYS - 1}?consistency=all"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert len(resp.read()) == 100


def test_an_endpoint_that_does_not_answer_fails_before_the_run(etcdload: Path) -> None:
    dead = f"http://127.0.231.9:{kv.free_port('127.0.231.9')}"
    proc = subprocess.run(
        [str(etcdload), "-endpoints", dead, "-duration", "1s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert f"etcdload: endpoint {dead} does not answer" in proc.stderr
    assert proc.stdout == ""
    over_http = subprocess.run(
        [str(etcdload), "-api", "kvtrace", "-endpoints", dead, "-duration", "1s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert over_http.returncode == 1
    assert f"etcdload: endpoint {dead} does not answer" in over_http.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-clients", "0"], "-clients: expected 1..4096, got 0"),
        (["-write-ratio", "1.5"], "-write-ratio: expected 0..1, got 1.5"),
        (["-duration", "11m"], "-duration: expected (0, 10m0s], got 11m0s"),
        ([], "-endpoints: expected at least one client URL, got none"),
        (["-api", "rest"], '-api: expected grpc, etcd-json or kvtrace, got "rest"'),
        (
            ["-api", "kvtrace", "-consistency", "two"],
            '-consistency: expected one, quorum or all, got "two"',
        ),
        (
            ["-api", "kvtrace", "-endpoints", "https://127.0.0.1:1"],
            '-endpoints: expected http://HOST:PORT with -api kvtrace, got "https://127.0.0.1:1"',
        ),
        (
            ["-api", "etcd-json", "-conns", "2", "-clients", "4"],
            "-conns: only with -api grpc (over HTTP each client has its own connection), got 2",
        ),
    ],
)
def test_bad_flags_name_the_flag_and_what_was_expected(
    etcdload: Path, flags: list[str], message: str
) -> None:
    endpoint = [] if not flags else ["-endpoints", "http://127.0.0.1:1"]
    proc = subprocess.run(
        [str(etcdload), *endpoint, *flags], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"etcdload: {message}"
