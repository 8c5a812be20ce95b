"""Pure parts of the local stack harness: tool verification, config rewriting, decoding."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from kvtrace.devstack import cluster, tools
from kvtrace.devstack.backends import forward_to_jaeger, jaeger_config, prepare_config
from kvtrace.devstack.podnames import Rewriter, expand, headless_pod_dns, is_service_address
from kvtrace.devstack.podrunner import LoopbackAllocator
from kvtrace.devstack.proc import free_port
from kvtrace.shared import endpoints
from kvtrace.shared.jaeger_client import decode_spans, group_traces

pytestmark = pytest.mark.unit


def _fake_tool(tmp_path: Path) -> tools.Tool:
    def build(out: Path, scratch: Path) -> None:
        script = out / "fake"
        script.write_text("#!/bin/sh\necho fake\n")
        script.chmod(0o755)

    return tools.Tool("fake", "1.0.0", ("fake",), build)


@pytest.fixture
def tools_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KVTRACE_TOOLS_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_verify_detects_missing_and_corrupt_binaries(tools_dir: Path, tmp_path: Path) -> None:
    tool = _fake_tool(tmp_path)
    assert tools.verify(tool) == "not built"
    tools.ensure(tool)
    assert tools.verify(tool) is None
    assert tool.directory.parent == tools_dir

    tool.path().write_text("#!/bin/sh\necho tampered\n")
    assert tools.verify(tool) == "fake corrupt (checksum mismatch)"
    tools.ensure(tool)  # rebuilt, not trusted
    assert tools.verify(tool) is None

    tool.path().unlink()
    assert tools.verify(tool) == "fake missing"


def test_missing_cluster_binaries_name_the_fix(tools_dir: Path) -> None:
    problems = cluster.missing_binaries()
    assert len(problems) == len(cluster.BINARIES)
    assert all("kvtrace dev tools" in p for p in problems)


def test_prepare_config_moves_every_listener_to_loopback() -> None:
    source = {
        "receivers": {
            "otlp": {"protocols": {"grpc": None, "http": {"endpoint": "0.0.0.0:4318"}}},
            "zipkin": None,
        },
        "exporters": {"otlp_grpc": {"endpoint": "jaeger:4317"}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}},
            "telemetry": {"metrics": {"address": "0.0.0.0:8888"}},
        },
    }
    config, found = prepare_config(source)
    assert source["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"  # copied
    assert set(found) == {"otlp/grpc", "otlp/http", "zipkin", "health_check", "metrics"}
    assert all(v.startswith("127.0.0.1:") for v in found.values())
    assert len(set(found.values())) == len(found)
    assert config["exporters"]["otlp_grpc"]["endpoint"] == "jaeger:4317"
    assert "health_check" in config["service"]["extensions"]
    assert "address" not in config["service"]["telemetry"]["metrics"]


def test_jaeger_and_forwarding_configs_have_distinct_ports() -> None:
    _, found = prepare_config(jaeger_config(), health_extension=None)
    assert {"otlp/grpc", "otlp/http", "jaeger_query/http", "healthcheckv2/http", "metrics"} <= set(
        found
    )
    config = forward_to_jaeger("127.0.0.1:4317")
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlp_grpc/jaeger"]


def test_decode_otlp_json_from_api_v3() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "kv"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "s"},
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "PUT",
                                "kind": 2,
                                "startTimeUnixNano": "1000",
                                "endTimeUnixNano": "3000000",
                                "attributes": [
                                    {"key": "kvstore.replicas.acked", "value": {"intValue": "2"}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                ],
                                "status": {"code": 2, "message": "boom"},
                            },
                            {
                                "traceId": "CvdlGRbNQ92ESOshHIAxnA==",
                                "spanId": "AAAAAAAAAAE=",
                                "parentSpanId": "t61rcWkgMzE=",
                                "name": "replicate",
                                "kind": "SPAN_KIND_CLIENT",
                                "status": {},
                            },
                        ],
                    }
                ],
            }
        ]
    }
    spans = decode_spans(body)
    assert [s.trace_id for s in spans] == ["0af7651916cd43dd8448eb211c80319c"] * 2
    first, second = spans
    assert (first.kind, first.status_code, first.service) == ("SERVER", "ERROR", "kv")
    assert first.attributes == {"kvstore.replicas.acked": 2, "ok": True}
    assert second.parent_span_id == first.span_id and second.kind == "CLIENT"
    (trace,) = group_traces(spans)
    assert trace.root() is first and trace.children(first) == [second]


def test_endpoint_map_file_and_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "map.json"
    writer = endpoints.EndpointMapFile(path)
    writer.update("a", {"kv.ns.svc:7070": "127.0.0.5:7070"})
    writer.update("b", {"otel.ns.svc:4318": "127.0.0.6:4318"})
    assert json.loads(path.read_text()) == {
        "kv.ns.svc:7070": "127.0.0.5:7070",
        "otel.ns.svc:4318": "127.0.0.6:4318",
    }
    monkeypatch.setenv(endpoints.ENV, str(path))
    assert endpoints.resolve("KV.ns.svc", 7070) == ("127.0.0.5", 7070)
    assert endpoints.resolve("other", 7070) == ("other", 7070)
    assert (
        endpoints.resolve_url("http://otel.ns.svc:4318/v1/traces")
        == "http://127.0.0.6:4318/v1/traces"
    )
    writer.remove("a")
    assert endpoints.resolve("kv.ns.svc", 7070) == ("kv.ns.svc", 7070)
    monkeypatch.delenv(endpoints.ENV)
    assert endpoints.resolve("otel.ns.svc", 4318) == ("otel.ns.svc", 4318)


def test_kubernetes_variable_expansion() -> None:
    env = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "x-y-$(C)-$(A)"


def test_rewriter_maps_mounts_and_wildcard_addresses(tmp_path: Path) -> None:
    rewrite = Rewriter(
        [("/etc/kv/peers", tmp_path / "p"), ("/etc/kv", tmp_path / "c")], "127.9.0.3", "10.244.0.7"
    )
    assert rewrite("--peers-file=/etc/kv/peers/list") == f"--peers-file={tmp_path}/p/list"
    assert rewrite("/etc/kv/conf.yaml") == f"{tmp_path}/c/conf.yaml"
    assert rewrite("/etc/kvx") == "/etc/kvx"
    assert rewrite("--client-addr=0.0.0.0:7070") == "--client-addr=127.9.0.3:7070"
    assert rewrite("[::]:7071") == "127.9.0.3:7071"
    assert rewrite("10.244.0.7:7070,10.244.0.70:1") == "127.9.0.3:7070,10.244.0.70:1"
    # The pod's own loopback (a server only a sidecar reaches) is the pod's address too.
    assert rewrite("--upstream http://127.0.0.1:16687") == "--upstream http://127.9.0.3:16687"
    assert rewrite("127.0.0.10:1,127.0.0.1") == "127.0.0.10:1,127.9.0.3"
    # Go's empty host (every interface of the pod), as a whole value or a flag's value.
    assert rewrite("--web.listen-address=:9090") == "--web.listen-address=127.9.0.3:9090"
    assert rewrite(":8888") == "127.9.0.3:8888"
    assert rewrite("a:9090") == "a:9090" and rewrite("--x=:9090,b") == "--x=:9090,b"


def test_rewriter_never_rewrites_a_replacement_again(tmp_path: Path) -> None:
    rewrite = Rewriter(
        [("/tmp", tmp_path / "scratch"), ("/var/lib/kv", Path("/tmp/cluster/pvc-1"))],
        "127.9.0.3",
        None,
    )
    assert rewrite("--data-dir=/var/lib/kv") == "--data-dir=/tmp/cluster/pvc-1"
    assert rewrite("/tmp/x:/var/lib/kv/y") == f"{tmp_path}/scratch/x:/tmp/cluster/pvc-1/y"


def test_rewriter_maps_known_cluster_names_and_records_every_name_it_meets() -> None:
    seen: dict[str, str | None] = {}
    rewrite = Rewriter(
        [], "127.9.0.3", None, {"kv-1.kv.ns.svc.cluster.local:7071": "127.9.0.4:7071"}, seen
    )
    assert (
        rewrite("kv-0=kv-0.kv.ns.svc.cluster.local:7071,kv-1=kv-1.kv.ns.svc.cluster.local:7071")
        == "kv-0=kv-0.kv.ns.svc.cluster.local:7071,kv-1=127.9.0.4:7071"
    )
    assert seen == {
        "kv-0.kv.ns.svc.cluster.local:7071": None,
        "kv-1.kv.ns.svc.cluster.local:7071": "127.9.0.4:7071",
    }
    assert (
        rewrite.text(b"endpoint: http://KV-1.kv.ns.svc.cluster.local:7071/x\n")
        == b"endpoint: http://127.9.0.4:7071/x\n"
    )
    assert rewrite.text(b"\xff\xfe0.0.0.0:1") == b"\xff\xfe0.0.0.0:1"


def test_a_headless_services_pod_names_render_the_same_before_and_after_the_pods_start() -> None:
    """A StatefulSet member's peers file names members whose pods do not exist yet (OrderedReady);
    their names rewrite to the address each pod will have, so the file does not change when they
    start (a change of a peer's address is a membership change to the node)."""
    services = [
        {"metadata": {"name": "kv-peers"}, "spec": {"clusterIP": "None"}},
        {"metadata": {"name": "kv"}, "spec": {"clusterIP": "10.0.0.7"}},
    ]
    addresses = {"kv-0": "127.9.0.3", "kv-1": "127.9.0.4", "kv-2": "127.9.0.5"}
    lookup = headless_pod_dns("ns", services, addresses.__getitem__)
    for name in ("kv-1.kv-peers", "kv-1.kv-peers.ns", "kv-1.kv-peers.ns.svc.cluster.local"):
        assert lookup(f"{name}:7071") == "127.9.0.4:7071", name
    for other in ("kv-1.kv:7070", "kv-1.kv-peers.other.svc:7071", "kv-peers:7071", "kv-1.x:1"):
        assert lookup(other) is None, other
    seen: dict[str, str | None] = {}
    known = {"kv-0.kv-peers.ns.svc.cluster.local:7071": "127.9.0.3:7071"}
    rewrite = Rewriter([], "127.9.0.3", None, known, seen, lookup)
    peers = "".join(f"kv-{i}=kv-{i}.kv-peers.ns.svc.cluster.local:7071\n" for i in range(3))
    assert rewrite(peers) == "kv-0=127.9.0.3:7071\nkv-1=127.9.0.4:7071\nkv-2=127.9.0.5:7071\n"


def test_service_addresses_are_told_from_pod_names_and_addresses() -> None:
    """A file's Service name restarts its pod's processes when it resolves; a pod's does not."""
    for service in ("jaeger-otlp.obs.svc.cluster.local:4317", "b.ns.svc:80"):
        assert is_service_address(service), service
    for other in (
        "kv-1.kv-peers.ns.svc.cluster.local:7071",  # a StatefulSet member under its subdomain
        "kv-1.kv-peers.ns.svc:7071",
        "b.ns:80",  # short forms are a Service's or HOSTNAME.SUBDOMAIN: not told apart
        "b:80",
        "127.0.0.1:4317",
        "jaeger-otlp.obs.svc.cluster.local",
    ):
        assert not is_service_address(other), other


def test_loopback_allocator_is_sticky_per_key() -> None:
    allocator = LoopbackAllocator(second_octet=7)
    a, b = allocator.allocate("ns/pod-0"), allocator.allocate()
    assert a != b and a.startswith("127.7.") and allocator.allocate("ns/pod-0") == a
    assert len({allocator.allocate() for _ in range(600)}) == 600


def test_cached_tool_paths_are_under_the_cache_root(tools_dir: Path) -> None:
    assert (
        tools.TOOLS["kubernetes"].directory == tools_dir / f"kubernetes-{tools.KUBERNETES_VERSION}"
    )
    assert os.fspath(tools.cache_root()) == os.fspath(tools_dir)


_BIND = (
    "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); "
    "s.listen(); print('listening', flush=True); time.sleep(60)"
)


def test_a_port_clash_picks_another_port(tmp_path: Path) -> None:
    import socket

    from kvtrace.devstack.proc import Process, start_with_port_retry

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [taken.getsockname()[1], free_port()]
    attempts: list[int] = []

    def make() -> Process:
        attempts.append(ports[len(attempts)])
        return Process(
            "binder", [sys.executable, "-c", _BIND, str(attempts[-1])], tmp_path / "binder.log"
        )

    proc = start_with_port_retry(
        make, lambda p: "listening" in p.tail().splitlines(), timeout=20, what="listening"
    )
    try:
        assert attempts == ports and proc.alive()
    finally:
        proc.stop()
        taken.close()
    assert not proc.alive()


def test_a_component_that_dies_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    from kvtrace.devstack.proc import Process, StartupError, wait_until

    proc = Process(
        "broken",
        [sys.executable, "-c", "import sys; print('bad flag --frobnicate'); sys.exit(3)"],
        tmp_path / "broken.log",
    ).start()
    with pytest.raises(StartupError) as info:
        wait_until(lambda: False, timeout=20, what="healthy", process=proc)
    message = str(info.value)
    assert (
        "broken died before healthy (exited with 3)" in message
        and "bad flag --frobnicate" in message
    )


def test_fixtures_fail_rather_than_skip_without_binaries_and_kind_says_why(tmp_path: Path) -> None:
    import subprocess

    from kvtrace.devstack.pytest_plugin import kind_unavailable

    (tmp_path / "conftest.py").write_text('pytest_plugins = ["kvtrace.devstack.pytest_plugin"]\n')
    (tmp_path / "test_inner.py").write_text(
        "import pytest\n\n"
        "def test_needs_cluster(local_cluster):\n    pass\n\n"
        "def test_needs_jaeger(jaeger):\n    jaeger()\n\n"
        "@pytest.mark.kind\ndef test_kind():\n    pass\n"
    )
    env = {**os.environ, "KVTRACE_TOOLS_DIR": str(tmp_path / "empty-cache")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::pytest.PytestUnknownMarkWarning",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode != 0, out
    assert (
        "ERROR test_inner.py::test_needs_cluster" in out
        and "FAILED test_inner.py::test_needs_jaeger" in out
    )
    assert (
        out.count("run `kvtrace dev tools`") >= 2 and "Build them with `kvtrace dev tools`" in out
    )
    reason = kind_unavailable()
    if reason:
        assert "SKIPPED" in out and f"kind tier needs Docker and kind: {reason}" in out
    else:
        assert "PASSED test_inner.py::test_kind" in out
