"""Pure parts of `kvtrace dev demo` (`make dev`): reading the example, the lines it prints
and the summaries of the load and of the traces Jaeger kept. No I/O here: the orchestration
is in :mod:`kvtrace.devstack.demo`."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kvtrace.inspect.waterfall import duration_ns, format_duration, has_error, node_of
from kvtrace.shared.api import API_VERSION

KINDS = {"KVCluster": "kvcluster", "TracingPipeline": "tracingpipeline"}


class DemoError(Exception):
    """A step of the demo failed; the message says what was expected."""


@dataclasses.dataclass(frozen=True)
class Example:
    """What `kvtrace dev demo` needs to know about the example it applies."""

    cluster: str  # the KVCluster's name
    replicas: int
    pipeline: str  # the TracingPipeline it references

    @property
    def refs(self) -> list[str]:
        """``kind/name`` of both resources, as `kubectl wait` takes them."""
        return [
            f"{KINDS['KVCluster']}/{self.cluster}",
            f"{KINDS['TracingPipeline']}/{self.pipeline}",
        ]


def read_example(documents: Sequence[Any], source: str) -> Example:
    """The one KVCluster of ``documents`` and the TracingPipeline it references (both must be
    there); a :class:`DemoError` naming ``source`` and the field otherwise."""
    clusters: list[tuple[str, Mapping[str, Any]]] = []
    pipelines: list[tuple[str, Mapping[str, Any]]] = []
    for index, doc in enumerate(documents):
        if not isinstance(doc, Mapping):
            raise DemoError(
                f"{source}: document {index + 1}: expected a mapping, got {type(doc).__name__}"
            )
        kind = doc.get("kind")
        if doc.get("apiVersion") != API_VERSION or kind not in KINDS:
            continue  # other objects are applied too, but the demo does not follow them
        name = (doc.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise DemoError(
                f"{source}: {kind} document {index + 1}: metadata.name: expected a name"
            )
        (clusters if kind == "KVCluster" else pipelines).append((name, doc.get("spec") or {}))
    if len(clusters) != 1:
        raise DemoError(
            f"{source}: expected exactly one {API_VERSION} KVCluster, found {len(clusters)}"
        )
    from kvtrace_operator.spec import SpecError, parse_kvcluster

    name, spec = clusters[0]
    try:
        parsed = parse_kvcluster(spec)
    except SpecError as exc:
        raise DemoError(f"{source}: KVCluster {name}: {exc}") from None
    replicas, ref = parsed.replicas, parsed.pipeline_name
    if replicas < 1:
        raise DemoError(
            f"{source}: KVCluster {name}: spec.replicas: expected a positive integer, got {replicas!r}"
        )
    if not ref:
        raise DemoError(
            f"{source}: KVCluster {name}: spec.tracing.pipelineRef.name: expected the "
            "TracingPipeline that traces it (the demo shows traces)"
        )
    if ref not in {p for p, _ in pipelines}:
        raise DemoError(
            f"{source}: KVCluster {name}: spec.tracing.pipelineRef.name: {ref!r} is not "
            f"among the example's TracingPipelines ({', '.join(p for p, _ in pipelines) or 'none'})"
        )
    return Example(name, replicas, ref)


def image_program(image: str) -> str:
    """The program a backend image runs, as the tool cache names it: the last path segment of
    the repository, without tag or digest (``ghcr.io/kvtrace/otelcol-kvtrace:0.161.0`` →
    ``otelcol-kvtrace``, ``jaegertracing/jaeger:2.13.0`` → ``jaeger``)."""
    repository = image.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    program = last.split(":", 1)[0]
    if not program:
        raise DemoError(
            f"image {image!r}: expected REPOSITORY[:TAG], cannot tell which program it runs"
        )
    return program


def step_start(index: int, total: int, name: str, detail: str = "") -> str:
    return f"==> [{index}/{total}] {name}" + (f": {detail}" if detail else "")


def step_end(name: str, seconds: float, problem: str | None = None) -> str:
    if problem is None:
        return f"    {name}: ok ({seconds:.1f}s)"
    return f"    {name}: FAILED after {seconds:.1f}s: {problem}"


def failure(step: str, problem: str, *, left_up: bool) -> str:
    """The closing message when a step failed."""
    tail = (
        'The stack stays up for inspection (`eval "$(kvtrace dev env)"`); Ctrl-C stops it.'
        if left_up
        else "Stopping everything that was started."
    )
    first = problem.strip().splitlines()[0] if problem.strip() else "no reason given"
    return f"kvtrace dev demo: step '{step}' failed: {first}\n{tail}"


# ------------------------------------------------------------------------------- load


def load_problems(result: Mapping[str, Any]) -> list[str]:
    """Why a `kvtrace bench` result does not count as a successful load step."""
    problems = []
    if not result.get("ops"):
        problems.append("no operation succeeded")
    if result.get("errors"):
        samples = "; ".join(str(s) for s in result.get("error_samples") or [])
        problems.append(
            f"{result['errors']} operation(s) failed" + (f" (e.g. {samples})" if samples else "")
        )
    return problems


def load_summary(result: Mapping[str, Any]) -> str:
    """`kvtrace bench`'s JSON result as the demo's load lines."""
    lines = [
        f"load: {result.get('ops', 0)} ops in {float(result.get('seconds', 0)):.1f}s, "
        f"{float(result.get('ops_per_s', 0)):.1f} ops/s, p50 {float(result.get('p50_ms', 0)):.2f}ms, "
        f"p99 {float(result.get('p99_ms', 0)):.2f}ms, {result.get('errors', 0)} errors "
        f"({result.get('clients', '?')} clients)"
    ]
    for op, figures in sorted((result.get("by_operation") or {}).items()):
        lines.append(
            f"  {op:5}: {int(figures.get('ops', 0))} ops, {float(figures.get('ops_per_s', 0)):.1f} ops/s, "
            f"p50 {float(figures.get('p50_ms', 0)):.2f}ms, p99 {float(figures.get('p99_ms', 0)):.2f}ms"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- traces


def trace_nodes(trace: Any) -> set[str]:
    """The members (pods) whose spans the trace holds."""
    return {node for node in (node_of(span) for span in trace.spans) if node}


def pick_trace(traces: Iterable[Any]) -> Any | None:
    """The trace worth drawing: spans from the most members, then the most spans, then the
    slowest; None when there is none with spans."""
    candidates = [t for t in traces if t.spans]
    if not candidates:
        return None
    return max(
        candidates, key=lambda t: (len(trace_nodes(t)), len(t.spans), duration_ns(t), t.trace_id)
    )


@dataclasses.dataclass(frozen=True)
class TraceStats:
    count: int
    spans: int
    services: list[str]
    nodes: list[str]
    operations: dict[str, int]  # root span name -> traces
    errors: int  # traces with an ERROR span
    slowest_id: str
    slowest_ns: int
    multi_node: int  # traces with spans from more than one member


def trace_stats(traces: Sequence[Any]) -> TraceStats:
    with_spans = [t for t in traces if t.spans]
    roots: Counter[str] = Counter()
    for t in with_spans:
        root = min(
            (s for s in t.spans if not s.parent_span_id), key=lambda s: s.start_ns, default=None
        )
        roots[root.name if root is not None else "(no root span)"] += 1
    slowest = max(with_spans, key=duration_ns, default=None)
    return TraceStats(
        count=len(with_spans),
        spans=sum(len(t.spans) for t in with_spans),
        services=sorted({s.service for t in with_spans for s in t.spans if s.service}),
        nodes=sorted({n for t in with_spans for n in trace_nodes(t)}),
        operations=dict(sorted(roots.items(), key=lambda item: (-item[1], item[0]))),
        errors=sum(1 for t in with_spans if has_error(t)),
        slowest_id=slowest.trace_id if slowest is not None else "",
        slowest_ns=duration_ns(slowest) if slowest is not None else 0,
        multi_node=sum(1 for t in with_spans if len(trace_nodes(t)) > 1),
    )


def traces_summary(stats: TraceStats, operations_sent: int | None = None) -> str:
    kept = f" for {operations_sent} operations sent" if operations_sent is not None else ""
    lines = [
        f"traces in Jaeger: {stats.count}{kept}, {stats.spans} spans, "
        f"{stats.multi_node} with spans from more than one node, {stats.errors} with errors",
        f"  services: {', '.join(stats.services) or 'none'}; nodes: {', '.join(stats.nodes) or 'none'}",
    ]
    for name, count in stats.operations.items():
        lines.append(f"  {count:6} × {name}")
    if stats.slowest_id:
        lines.append(
            f"  slowest: {stats.slowest_id} ({format_duration(stats.slowest_ns)}): "
            f"kvtrace trace {stats.slowest_id}"
        )
    return "\n".join(lines)


EXPORT_QUIET_S = 6.0  # longer than the OTel SDK's 5 s batch export interval


def traces_settled(seen: Sequence[tuple[float, Any]], quiet_s: float = EXPORT_QUIET_S) -> bool:
    """Whether to stop polling Jaeger, given ``(monotonic time, what it held)`` per poll:
    what it holds (trace and span counts) has not changed for ``quiet_s`` seconds. Counting
    traces alone is not enough: a trace is listed as soon as any member's spans are in, and
    the other members' spans of it may come one export interval later."""
    if not seen:
        return False
    last_time, last = seen[-1]
    since = last_time
    for moment, value in reversed(seen):
        if value != last:
            break
        since = moment
    return last_time - since >= quiet_s


def trace_problems(stats: TraceStats) -> list[str]:
    """Why the traces found do not (yet) show what the demo promises."""
    problems = []
    if not stats.count:
        problems.append("Jaeger holds no trace of the KV service")
    elif not stats.multi_node:
        problems.append("no trace has spans from more than one node (replica calls missing)")
    return problems


# ------------------------------------------------------------------------------- the end


def endpoints_text(
    exports: Mapping[str, str],
    jaeger_url: str,
    collector_http: str,
    service: str,
    namespace: str,
    prometheus_url: str = "",
) -> str:
    """Where the demo's pieces are; with a metrics store, the Monitor tab and Prometheus too."""
    lines = [
        "Where things are:",
        *[f"  export {k}={v}" for k, v in exports.items()],
        f"  Jaeger UI and /api/v3: {jaeger_url}  (search service {service!r})",
    ]
    if prometheus_url:
        lines += [
            f"  Jaeger Monitor tab (RED per operation): {jaeger_url}/monitor",
            f"  Jaeger System Architecture: {jaeger_url}/dependencies",
            f"  Prometheus: {prometheus_url}  (span metrics, alerts: {prometheus_url}/alerts)",
        ]
    lines += [
        f"  collector (OTLP/HTTP): {collector_http}",
        f"  kubectl -n {namespace} get kvtrace,pods      # after the exports above",
        f"  kvtrace traces --service {service} --limit 3  # after the exports above",
    ]
    if prometheus_url:
        lines.append(f"  kvtrace top -n {namespace}                    # after the exports above")
    return "\n".join(lines)


def metrics_deployed(documents: Sequence[Any], pipeline: str) -> bool:
    """Whether the example's TracingPipeline ``pipeline`` has the operator deploy a Prometheus:
    ``spec.metrics`` on (the default) without an external store."""
    from kvtrace_operator.spec import parse_pipeline

    for doc in documents:
        if (
            isinstance(doc, Mapping)
            and doc.get("kind") == "TracingPipeline"
            and (doc.get("metadata") or {}).get("name") == pipeline
        ):
            return parse_pipeline(doc.get("spec")).metrics.deploys_prometheus
    return False


def env_lines(env: Mapping[str, str], prefix: str = "OTEL_") -> list[str]:
    """The ``prefix`` variables of a process environment, sorted, as ``NAME=value``."""
    return [f"{k}={v}" for k, v in sorted(env.items()) if k.startswith(prefix)]


def application_trace(traces: Iterable[Any], app_service: str, kv_service: str) -> Any | None:
    """A trace that starts in the application (its root span is the app's) and holds the KV
    coordinator's and at least one replica's spans (``kv_service`` spans of two or more
    members): the one-trace proof of injection (docs/injection.md). The one with the most
    members, then spans; None when none is complete yet."""
    complete = [
        t
        for t in traces
        if t.spans
        and (root := t.root()) is not None
        and root.service == app_service
        and len({node_of(s) for s in t.spans if s.service == kv_service and node_of(s)}) >= 2
    ]
    if not complete:
        return None
    return max(complete, key=lambda t: (len(trace_nodes(t)), len(t.spans), t.trace_id))
