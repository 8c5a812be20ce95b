"""`kvtrace dev demo` (`make dev`): the pure parts (reading the example, the summaries, the
trace it draws), its argument checks, and a failing first step (no cluster involved)."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.cli import build_parser
from kvtrace.devstack import demo_summary as text
from kvtrace.devstack.demo import REPO, STEPS, Demo, Options
from kvtrace.devstack.demo_summary import DemoError
from kvtrace.shared.jaeger_client import Span, Trace

pytestmark = pytest.mark.unit

BASIC = REPO / "examples" / "01-basic"


def basic_documents() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(BASIC.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_read_example_finds_the_cluster_and_the_pipeline_it_references() -> None:
    example = text.read_example(basic_documents(), "examples/01-basic")
    assert example == text.Example(cluster="basic", replicas=3, pipeline="dev-traces")
    assert example.refs == ["kvcluster/basic", "tracingpipeline/dev-traces"]
    # Other objects are applied too but not followed; replicas default to the CRD's 3.
    docs = basic_documents()
    kv = next(d for d in docs if d["kind"] == "KVCluster")
    del kv["spec"]["replicas"]
    extra = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    assert text.read_example([extra, *docs], "f").replicas == 3


def _broken(edit: Any) -> list[dict[str, Any]]:
    docs = copy.deepcopy(basic_documents())
    edit(docs)
    return docs


def _kv(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "KVCluster")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda docs: docs.remove(_kv(docs)),
            "src: expected exactly one kvtrace.dev/v1alpha1 KVCluster, found 0",
        ),
        (
            lambda docs: docs.append(copy.deepcopy(_kv(docs))),
            "expected exactly one kvtrace.dev/v1alpha1 KVCluster, found 2",
        ),
        (
            lambda docs: _kv(docs)["metadata"].pop("name"),
            "KVCluster document 1: metadata.name: expected a name",
        ),
        (
            lambda docs: _kv(docs)["spec"].update(replicas=0),
            "KVCluster basic: spec.replicas: expected a positive integer, got 0",
        ),
        (
            lambda docs: _kv(docs)["spec"].update(replicas="3"),
            "KVCluster basic: spec.replicas: expected an integer, got a string '3'",
        ),
        (
            lambda docs: _kv(docs)["spec"].pop("tracing"),
            "KVCluster basic: spec.tracing.pipelineRef.name: expected the TracingPipeline",
        ),
        (
            lambda docs: _kv(docs)["spec"]["tracing"]["pipelineRef"].update(name="other"),
            "spec.tracing.pipelineRef.name: 'other' is not among the example's TracingPipelines (dev-traces)",
        ),
        (
            lambda docs: docs.append(["not", "a", "mapping"]),
            "src: document 3: expected a mapping, got list",
        ),
    ],
)
def test_read_example_names_the_field_that_is_wrong(edit: Any, expected: str) -> None:
    with pytest.raises(DemoError) as raised:
        text.read_example(_broken(edit), "src")
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("image", "program"),
    [
        ("ghcr.io/kvtrace/otelcol-kvtrace:0.161.0", "otelcol-kvtrace"),
        ("jaegertracing/jaeger:2.13.0", "jaeger"),
        ("localhost:5000/team/jaeger", "jaeger"),
        ("registry.example/otelcol-kvtrace@sha256:" + "a" * 64, "otelcol-kvtrace"),
    ],
)
def test_image_program_is_the_repositorys_last_segment(image: str, program: str) -> None:
    assert text.image_program(image) == program


def test_image_program_rejects_an_empty_image() -> None:
    with pytest.raises(DemoError, match="image '': expected REPOSITORY"):
        text.image_program("")


BENCH = {
    "target": "kvtrace",
    "clients": 8,
    "seconds": 0.4,
    "ops": 300,
    "errors": 0,
    "ops_per_s": 750.0,
    "p50_ms": 4.5,
    "p95_ms": 9.0,
    "p99_ms": 14.25,
    "error_samples": [],
    "by_operation": {
        "write": {"ops": 149, "ops_per_s": 372.5, "p50_ms": 5.5, "p99_ms": 14.0},
        "read": {"ops": 151, "ops_per_s": 377.5, "p50_ms": 3.5, "p99_ms": 10.0},
    },
}


def test_load_summary_and_problems() -> None:
    assert text.load_summary(BENCH).splitlines() == [
        "load: 300 ops in 0.4s, 750.0 ops/s, p50 4.50ms, p99 14.25ms, 0 errors (8 clients)",
        "  read : 151 ops, 377.5 ops/s, p50 3.50ms, p99 10.00ms",
        "  write: 149 ops, 372.5 ops/s, p50 5.50ms, p99 14.00ms",
    ]
    assert text.load_problems(BENCH) == []
    failed = {**BENCH, "errors": 2, "error_samples": ["503 b'not enough replicas'"]}
    assert text.load_problems(failed) == ["2 operation(s) failed (e.g. 503 b'not enough replicas')"]
    assert text.load_problems({"ops": 0, "errors": 0}) == ["no operation succeeded"]


def span(
    trace: str,
    sid: str,
    parent: str,
    name: str,
    node: str,
    start_ms: float,
    end_ms: float,
    error: bool = False,
) -> Span:
    return Span(
        trace_id=trace,
        span_id=sid,
        parent_span_id=parent,
        name=name,
        kind="SERVER",
        service="basic",
        start_ns=int(start_ms * 1e6),
        end_ns=int(end_ms * 1e6),
        attributes={},
        resource={"kvstore.member.id": node},
        status_code="ERROR" if error else "UNSET",
    )


LOCAL = Trace("a" * 32, [span("a" * 32, "1" * 16, "", "GET /v1/kv/{key}", "basic-0", 0, 30)])
REPLICATED = Trace(
    "b" * 32,
    [
        span("b" * 32, "2" * 16, "", "PUT /v1/kv/{key}", "basic-0", 100, 110),
        span("b" * 32, "3" * 16, "2" * 16, "kvstore.replicate", "basic-0", 101, 108),
        span("b" * 32, "4" * 16, "3" * 16, "kvstore.replicate", "basic-1", 102, 107, error=True),
    ],
)
EMPTY = Trace("c" * 32, [])


def test_trace_stats_count_services_nodes_slowest_and_errors() -> None:
    stats = text.trace_stats([LOCAL, REPLICATED, EMPTY])
    assert stats == text.TraceStats(
        count=2,
        spans=4,
        services=["basic"],
        nodes=["basic-0", "basic-1"],
        operations={"GET /v1/kv/{key}": 1, "PUT /v1/kv/{key}": 1},
        errors=1,
        slowest_id="a" * 32,
        slowest_ns=30_000_000,
        multi_node=1,
    )
    assert text.trace_problems(stats) == []
    lines = text.traces_summary(stats, 2).splitlines()
    assert (
        lines[0]
        == "traces in Jaeger: 2 for 2 operations sent, 4 spans, 1 with spans from more than one node, 1 with errors"
    )
    assert lines[1] == "  services: basic; nodes: basic-0, basic-1"
    assert lines[-1] == f"  slowest: {'a' * 32} (30.0ms): kvtrace trace {'a' * 32}"


def test_trace_problems_when_nothing_or_only_single_node_traces_arrived() -> None:
    assert text.trace_problems(text.trace_stats([])) == ["Jaeger holds no trace of the KV service"]
    assert text.trace_problems(text.trace_stats([LOCAL])) == [
        "no trace has spans from more than one node (replica calls missing)"
    ]


def test_traces_settle_once_nothing_changed_for_longer_than_an_export_interval() -> None:
    assert not text.traces_settled([])
    assert not text.traces_settled([(0.0, (300, 900))])
    # Every trace listed, but spans still arriving: not settled until 6 s without a change.
    polls = [
        (0.0, (10, 20)),
        (1.0, (306, 834)),
        (2.0, (306, 1210)),
        (3.0, (306, 1210)),
        (7.9, (306, 1210)),
    ]
    assert not text.traces_settled(polls)
    assert text.traces_settled([*polls, (8.0, (306, 1210))])
    assert not text.traces_settled([*polls, (8.0, (306, 1211))])
    assert text.traces_settled([(0.0, (1, 1)), (2.5, (1, 1))], quiet_s=2.0)


def test_pick_trace_prefers_more_nodes_over_a_slower_trace() -> None:
    assert text.pick_trace([LOCAL, REPLICATED, EMPTY]) is REPLICATED
    assert text.pick_trace([LOCAL]) is LOCAL
    assert text.pick_trace([EMPTY]) is None
    assert text.trace_nodes(REPLICATED) == {"basic-0", "basic-1"}


def test_step_lines_failure_message_and_env_lines() -> None:
    assert text.step_start(3, 11, "cluster", "kwok") == "==> [3/11] cluster: kwok"
    assert text.step_end("cluster", 5.04) == "    cluster: ok (5.0s)"
    assert text.step_end("load", 1.0, "2 failed") == "    load: FAILED after 1.0s: 2 failed"
    message = text.failure("operator", "exited (1); log x\nTraceback ...", left_up=False)
    assert message.splitlines() == [
        "kvtrace dev demo: step 'operator' failed: exited (1); log x",
        "Stopping everything that was started.",
    ]
    assert "Ctrl-C stops it" in text.failure("load", "x", left_up=True)
    assert text.env_lines({"PATH": "/bin", "OTEL_B": "2", "OTEL_A": "1"}) == [
        "OTEL_A=1",
        "OTEL_B=2",
    ]


def test_a_bad_example_fails_the_first_step_and_starts_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "example"
    folder.mkdir()
    docs = _broken(lambda docs: _kv(docs)["spec"].pop("tracing"))
    (folder / "all.yaml").write_text(yaml.safe_dump_all(docs))
    out = io.StringIO()
    state = tmp_path / "state.json"
    demo = Demo(Options(example=folder, exit_after=True), out=out, state_path=state)
    assert demo.run() == 1
    lines = out.getvalue().splitlines()
    # Until the example is read, the count assumes spec.metrics' default (on): two more steps.
    assert lines[0] == f"==> [1/{len(STEPS) + 2}] example: {folder}"
    assert lines[-2] == (
        f"kvtrace dev demo: step 'example' failed: {folder}: KVCluster basic: "
        "spec.tracing.pipelineRef.name: expected the TracingPipeline that traces it "
        "(the demo shows traces)"
    )
    assert lines[-1] == "Stopping everything that was started."
    assert demo.cluster is None and not state.exists()


def test_a_folder_without_manifests_is_named_by_its_flag(tmp_path: Path) -> None:
    out = io.StringIO()
    assert Demo(Options(example=tmp_path, exit_after=True), out=out).run() == 1
    assert (
        f"step 'example' failed: --example: {tmp_path} is not a folder with YAML manifests"
        in out.getvalue()
    )
    out = io.StringIO()
    assert Demo(Options(crds=tmp_path, exit_after=True), out=out).run() == 1
    assert (
        f"step 'example' failed: --crds: {tmp_path} is not a folder with the CRD manifests"
        in out.getvalue()
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ops", "0"], "argument --ops: expected a positive int, got '0'"),
        (["--duration", "soon"], "argument --duration: expected a positive float, got 'soon'"),
        (["--clients", "-1"], "argument --clients: expected a positive int, got '-1'"),
    ],
)
def test_bad_flags_are_named(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["dev", "demo", *args])
    assert raised.value.code == 2
    assert expected in capsys.readouterr().err


def test_duration_above_the_bench_limit_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["dev", "demo", "--duration", "601"])
    assert args.func(args) == 2
    assert (
        capsys.readouterr().err.strip()
        == "kvtrace dev demo: --duration: expected at most 600 seconds, got 601"
    )


def test_the_pod_runner_asks_resolve_command_once_per_pod_container_and_image(
    tmp_path: Path,
) -> None:
    """The demo's entrypoint callback checksums a cached binary; the runner renders every poll."""
    from kvtrace.devstack.podrunner import PodRunner

    asked: list[str] = []

    def entrypoint(pod: dict[str, Any], container: dict[str, Any]) -> list[str] | None:
        asked.append(container["image"])
        return None if container["image"] == "later:1" else ["/bin/true"]

    runner = PodRunner(None, "ns", workdir=tmp_path, resolve_command=entrypoint)
    pod = {"metadata": {"uid": "u1"}}
    container = {"name": "c", "image": "tool:1", "args": ["--x"]}
    assert [runner.renderer.argv(pod, container) for _ in range(3)] == [["/bin/true", "--x"]] * 3
    assert runner.renderer.argv({"metadata": {"uid": "u2"}}, container) == ["/bin/true", "--x"]
    later = {"name": "c", "image": "later:1"}
    assert runner.renderer.argv(pod, later) is None and runner.renderer.argv(pod, later) is None
    assert asked == ["tool:1", "tool:1", "later:1", "later:1"]  # no answer is asked again


def test_application_trace_starts_in_the_app_and_holds_two_members() -> None:
    """Example 06's proof: a trace rooted in the injected app's span with the store's
    coordinator and a replica (two members); the app alone or one member is not enough."""

    def app_span(trace: str) -> Span:
        return Span(
            trace_id=trace,
            span_id="9" * 16,
            parent_span_id="",
            name="PUT",
            kind="CLIENT",
            service="kvapp",
            start_ns=0,
            end_ns=int(20e6),
            attributes={},
            resource={"k8s.pod.name": "kvapp-1"},
            status_code="UNSET",
        )

    def store_span(trace: str, sid: str, parent: str, node: str) -> Span:
        return Span(
            trace_id=trace,
            span_id=sid,
            parent_span_id=parent,
            name="PUT /v1/kv/{key}",
            kind="SERVER",
            service="store",
            start_ns=int(1e6),
            end_ns=int(9e6),
            attributes={},
            resource={"kvstore.member.id": node},
            status_code="UNSET",
        )

    whole = Trace(
        "c" * 32,
        [
            app_span("c" * 32),
            store_span("c" * 32, "5" * 16, "9" * 16, "store-0"),
            store_span("c" * 32, "6" * 16, "5" * 16, "store-1"),
        ],
    )
    one_member = Trace(
        "d" * 32, [app_span("d" * 32), store_span("d" * 32, "5" * 16, "9" * 16, "store-0")]
    )
    kv_rooted = Trace(
        "e" * 32,
        [
            store_span("e" * 32, "5" * 16, "", "store-0"),
            store_span("e" * 32, "6" * 16, "5" * 16, "store-1"),
        ],
    )
    assert text.application_trace([one_member, kv_rooted, whole], "kvapp", "store") is whole
    assert text.application_trace([one_member, kv_rooted], "kvapp", "store") is None
