"""The real tracing chain on loopback: KV nodes → the collector config the operator renders →
Jaeger v2, for the dataplane tests of tests/tracing (and benchmarks/tracing_overhead.py).

Everything that decides what reaches Jaeger comes from the operator's pure renderers:
``render_collector_config`` (each tier), ``render_jaeger_config`` and ``otel_environment``.
What a Kubernetes cluster would resolve or inject is filled in by two small functions, and
nothing else is changed:

- :func:`loopback_config` (collector and Jaeger configs) - see its docstring for the exact
  list of rewrites; the listening ports are moved by ``kvtrace.devstack.backends``.
- :func:`pod_env` (KV node environment) - fieldRef and secretKeyRef values as the pod would
  see them, ``$(VAR)`` expanded as the kubelet does, the collector Service URL pointed at
  loopback.

Auth is on by default (``spec.security.auth``): the harness writes a token file
(``kvtrace.devstack.otlp_token``), the edge collector reads it and the nodes send it. So is
TLS (``spec.security.tls``, mode managed): ``kvtrace.devstack.local_tls`` issues every
server's leaf (its Service names and 127.0.0.1) from a CA of its own, the servers serve it and
every client verifies it (the nodes against 127.0.0.1, the exporters the Service names).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import random
import re
import secrets
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvnode.client import ClientError, Connection, kv_path
from kvnode.keys import key_hash
from kvtrace.devstack.backends import Collector, Jaeger
from kvtrace.devstack.local_tls import LocalTLS
from kvtrace.devstack.otlp_token import use_token_file
from kvtrace.devstack.podrender import HOST_CA_OVERRIDES
from kvtrace.devstack.proc import Process, free_port, wait_until
from kvtrace.devstack.prometheus import OTLP_METRICS_PATH, Prometheus
from kvtrace.devstack.pytest_plugin import poll
from kvtrace.shared.jaeger_client import JaegerClient, Trace
from kvtrace_operator.render import otel_environment
from kvtrace_operator.render.collector import JAEGER_EXPORTER
from kvtrace_operator.render.jaeger import BADGER_DIR
from kvtrace_operator.render.metrics import METRICS_EXPORTER
from kvtrace_operator.render.otel_env import flag_variable, node_trace_flags
from kvtrace_operator.spec import parse_pipeline

BIN = Path(sys.executable).parent
NAMESPACE = "shop"
CLUSTER = "orders"  # the KVCluster: service name "orders", pods orders-0..2
PIPELINE = "traces"
PUT_OP = "PUT /v1/kv/{key}"
GET_OP = "GET /v1/kv/{key}"
# A whole QUORUM write trace (replication factor 3): the coordinator's SERVER span and one
# SERVER span per peer replica, children of it (the coordinator applies its own copy in-process).
SPANS_PER_WRITE = 3
CLIENT_SERVICE = "shop-frontend"  # a traced client of the KV service (traced_client_writes)
CLOSED_PROMETHEUS = "http://127.0.0.1:9"  # discard port: nothing listens on loopback


def pipeline(**spec: Any) -> dict[str, Any]:
    """A TracingPipeline custom resource (plain dict, as the operator receives it)."""
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": PIPELINE, "namespace": NAMESPACE, "generation": 1},
        "spec": spec,
    }


def kvcluster(replicas: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": CLUSTER, "namespace": NAMESPACE, "generation": 1},
        "spec": {"replicas": replicas, "tracing": {"pipelineRef": {"name": PIPELINE}}},
    }


# --------------------------------------------------------------------------- rewriting


def loopback_config(
    config: dict[str, Any],
    *,
    jaeger_otlp_grpc: str | None = None,
    sampling_collectors: Sequence[str] = (),
    badger_dir: Path | None = None,
    token_file: Path | None = None,
    tls: LocalTLS | None = None,
    leaf: str | None = None,
    prometheus_url: str = CLOSED_PROMETHEUS,
) -> dict[str, Any]:
    """A copy of a rendered collector or Jaeger config that runs on loopback. It changes only:

    - ``exporters.otlp_grpc/jaeger.endpoint``: the Jaeger OTLP Service DNS name → Jaeger's
      loopback OTLP gRPC address ``jaeger_otlp_grpc``;
    - ``exporters.load_balancing.resolver``: ``dns`` on the sampling tier's headless Service →
      ``static`` with ``sampling_collectors`` (their loopback OTLP gRPC addresses): a DNS
      resolver cannot resolve loopback processes; routing (``routing_key: traceID``) and the
      protocol are untouched;
    - Jaeger's badger ``directories`` (``/badger/...`` in the pod: the trace store's and the
      archive's) → the same paths under ``badger_dir``;
    - the ``bearertokenauth`` extension's token file (the mounted Secret in the pod) →
      ``token_file`` (``otlp_token.use_token_file``);
    - the TLS mounts (the serving certificate, the trust bundle) → the files of ``tls``, the
      server serving ``leaf`` (``local_tls.LocalTLS.use_files``);
    - the pipeline's Prometheus (``spec.metrics``: the collector's ``otlp_http/metrics``
      exporter, Jaeger's metric backend) → ``prometheus_url`` (by default a closed loopback
      port: a stack without a Prometheus drops its span metrics, and traces flow anyway).

    Every listening address (receivers, extensions, the process's own metrics) is then moved
    to a free loopback port by ``kvtrace.devstack.backends`` when the process starts.
    """
    config = use_token_file(config, token_file)
    if tls is not None:
        config = tls.use_files(config, leaf)
    exporters = config.get("exporters") or {}
    if JAEGER_EXPORTER in exporters:
        if jaeger_otlp_grpc is None:
            raise ValueError("the config exports to Jaeger: give jaeger_otlp_grpc")
        exporters[JAEGER_EXPORTER]["endpoint"] = jaeger_otlp_grpc
    if "load_balancing" in exporters:
        if not sampling_collectors:
            raise ValueError("the config has a load_balancing exporter: give sampling_collectors")
        exporters["load_balancing"]["resolver"] = {
            "static": {"hostnames": list(sampling_collectors)}
        }
    if METRICS_EXPORTER in exporters:
        exporters[METRICS_EXPORTER]["metrics_endpoint"] = prometheus_url + OTLP_METRICS_PATH
    extensions = config.get("extensions") or {}
    for backend in ((extensions.get("jaeger_storage") or {}).get("metric_backends") or {}).values():
        backend["prometheus"]["endpoint"] = prometheus_url
    for backend in ((extensions.get("jaeger_storage") or {}).get("backends") or {}).values():
        if "badger" in backend:
            if badger_dir is None:
                raise ValueError("the Jaeger config uses badger: give badger_dir")
            backend["badger"]["directories"] = {
                kind: str(badger_dir / Path(path).relative_to(BADGER_DIR))
                for kind, path in backend["badger"]["directories"].items()
            }
    return config


_FIELD_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def pod_env(
    cluster: dict[str, Any],
    pipe: dict[str, Any] | None,
    *,
    pod: str,
    node: str,
    collector_otlp_http: str | None,
    secrets: Mapping[tuple[str, str], str] | None = None,
    tls: LocalTLS | None = None,
) -> dict[str, str]:
    """The environment ``otel_environment(cluster, pipe)`` gives KV pod ``pod`` on node ``node``:
    fieldRefs resolved (``metadata.name`` → pod, ``spec.nodeName`` → node), secretKeyRefs from
    ``secrets`` (``{(secret, key): value}``, e.g. ``LocalToken.secrets(pipe)``), ``$(VAR)``
    expanded from earlier entries as the kubelet does, ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the
    collector Service, port 4318) → ``collector_otlp_http``'s ``127.0.0.1:PORT`` (the rendered
    scheme kept: https with TLS), and the trust bundle's mount → ``tls``'s files."""
    fields = {"metadata.name": pod, "spec.nodeName": node}
    env: dict[str, str] = {}
    for item in otel_environment(cluster, pipe):
        source = item.get("valueFrom")
        if source and "fieldRef" in source:
            value = fields[source["fieldRef"]["fieldPath"]]
        elif source:
            ref = source["secretKeyRef"]
            if (ref["name"], ref["key"]) not in (secrets or {}):
                raise ValueError(
                    f"{item['name']} reads Secret {ref['name']} key {ref['key']}: give its value in secrets"
                )
            value = (secrets or {})[(ref["name"], ref["key"])]
        else:
            value = _FIELD_REF.sub(lambda m: env.get(m.group(1), m.group(0)), item["value"])
        env[item["name"]] = value
    if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
        if collector_otlp_http is None:
            raise ValueError("the pod exports spans: give collector_otlp_http")
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318"), env[
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        ]
        scheme = env["OTEL_EXPORTER_OTLP_ENDPOINT"].split("://", 1)[0]
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"{scheme}://{collector_otlp_http.split('://', 1)[-1]}"
    return tls.client_env(env) if tls is not None else env


# --------------------------------------------------------------------------- backends


class Restartable:
    """Kill and restart a started backend on the very same ports and config (a pod restart
    keeps its Service address; ``backends`` would pick new ports on a fresh ``start()``)."""

    backend: Collector | Jaeger

    def kill(self, graceful: bool = False) -> None:
        proc = self.backend.process
        assert proc is not None and proc.popen is not None
        if graceful:
            proc.stop(timeout=20)
        else:
            os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.stop(timeout=1)
        # stop() returns once the group shows no live process; a multi-threaded leader can
        # still be exiting then (a zombie main thread): reap it, so its ports are free
        proc.popen.wait(timeout=20)

    def restart(self, timeout: float = 60) -> None:
        b = self.backend
        assert b.process is not None and not b.process.alive()
        proc = Process(b.name, b.process.argv, b.process.log_path, env=b.process.env).start()
        b.process = proc
        wait_until(b._ready, timeout=timeout, what="healthy after restart", process=proc)


@dataclass
class RestartableCollector(Restartable):
    backend: Collector


@dataclass
class RestartableJaeger(Restartable):
    backend: Jaeger

    @property
    def client(self) -> JaegerClient:
        return self.backend.client(timeout=10)


# --------------------------------------------------------------------------- KV nodes


@dataclass
class KVNode:
    pod: str
    ip: str
    client_port: int
    peer_port: int
    env: dict[str, str]
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.client_port}"


def start_kv_nodes(
    root: Path,
    ips: Sequence[str],
    cluster: dict[str, Any],
    pipe: dict[str, Any] | None,
    collector_otlp_http: str | None,
    *,
    faults: str = "",
    extra: dict[str, str] | None = None,
    stagger: float = 0.0,
    timeout: float = 60,
    secrets: Mapping[tuple[str, str], str] | None = None,
    tls: LocalTLS | None = None,
) -> list[KVNode]:
    """``opentelemetry-instrument kvtrace node serve`` for pods ``orders-0..`` on ``ips``, each
    with :func:`pod_env` as its whole OTel configuration (nothing else sets OTEL_*) and the
    tracing flags the StatefulSet's args would carry (``node_trace_flags``: retroactive
    sampling, raw keys) as their ``KVNODE_*`` variables;
    ``secrets`` resolves its secretKeyRefs (the auth token), ``tls`` its trust bundle.

    ``stagger``: seconds between the starts. Each node's batch span processor exports on its
    own timer (``OTEL_BSP_SCHEDULE_DELAY``) from its start; nodes started together export in phase, which hides how far
    apart the spans of one trace can reach the collector. Pods start at different times:
    staggering puts the timers out of phase as they would be in a cluster."""
    nodes = [
        KVNode(f"{CLUSTER}-{i}", ip, free_port(ip), free_port(ip), {}) for i, ip in enumerate(ips)
    ]
    peers = ",".join(f"{n.pod}={n.ip}:{n.peer_port}" for n in nodes)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "KVNODE_")) and k not in HOST_CA_OVERRIDES
    }  # a pod has no host CA override
    for i, n in enumerate(nodes):
        n.env = pod_env(
            cluster,
            pipe,
            pod=n.pod,
            node=f"kwok-node-{i}",
            collector_otlp_http=collector_otlp_http,
            secrets=secrets,
            tls=tls,
        )
        pipe_spec = parse_pipeline(pipe.get("spec")) if pipe is not None else None
        env = {
            **base,
            **n.env,
            "KVNODE_ID": n.pod,
            "KVNODE_CLIENT_ADDR": f"{n.ip}:{n.client_port}",
            "KVNODE_PEER_ADDR": f"{n.ip}:{n.peer_port}",
            "KVNODE_PEERS": peers,
            "KVNODE_DATA_DIR": str(root / n.pod),
            "KVNODE_ANTI_ENTROPY_INTERVAL": "0",
            "KVNODE_PEER_TIMEOUT": "5s",
            "KVNODE_LOG_LEVEL": "warning",
            **{flag_variable(flag): value for flag, value in node_trace_flags(pipe_spec)},
            **(extra or {}),
        }
        if faults:
            env["KVNODE_FAULTS"] = faults
        argv = [str(BIN / "opentelemetry-instrument"), str(BIN / "kvtrace"), "node", "serve"]
        if i and stagger:
            time.sleep(stagger)  # deliberate offset of the export timers, not a wait for anything
        n.process = Process(n.pod, argv, root / f"{n.pod}.log", env=env).start()
    try:
        for n in nodes:
            wait_until(
                lambda n=n: _ready(n), timeout=timeout, what=f"{n.pod} ready", process=n.process
            )
    except BaseException:
        stop_kv_nodes(nodes)
        raise
    return nodes


def _ready(node: KVNode) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(node.url + "/readyz", timeout=2) as resp:  # loopback
            return bool(resp.status == 200)
    except OSError:
        return False


def stop_kv_nodes(nodes: Iterable[KVNode]) -> None:
    for n in nodes:
        if n.process is not None:
            n.process.stop(timeout=10)


@dataclass
class Stack:
    """A started chain (see ``trace_stack`` in conftest.py)."""

    pipeline: dict[str, Any]
    jaeger: RestartableJaeger
    collector: RestartableCollector  # where the nodes send (the load-balancing tier with two tiers)
    samplers: list[RestartableCollector] = field(
        default_factory=list
    )  # the sampling tier of two tiers
    nodes: list[KVNode] = field(default_factory=list)
    prometheus: Prometheus | None = None  # trace_stack(..., prometheus=True)


# --------------------------------------------------------------------------- operations


@dataclass
class Op:
    """One client operation; after :func:`run_ops`: its status and latency in seconds."""

    url: str
    method: str
    key: str
    value: bytes = b""
    consistency: str | None = "quorum"
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0
    seconds: float = 0.0
    error: str = ""
    trace_id: str = ""  # set when the test chose the trace (a sampled traceparent)

    @property
    def key_hash(self) -> str:
        return f"{key_hash(self.key.encode()):016x}"


def run_ops(ops: Sequence[Op], concurrency: int = 8, timeout: float = 120) -> list[Op]:
    """Run ``ops`` with ``concurrency`` workers (keep-alive connections), bounded by ``timeout``."""

    async def main() -> None:
        queue = iter(ops)
        deadline = time.monotonic() + timeout

        async def worker() -> None:
            conns: dict[str, Connection] = {}
            try:
                for op in queue:
                    if time.monotonic() > deadline:
                        op.error = "not run: the batch ran out of time"
                        continue
                    conn = conns.setdefault(op.url, Connection(op.url, timeout=15))
                    t0 = time.perf_counter()
                    try:
                        resp = await conn.request(
                            op.method, kv_path(op.key, op.consistency), op.value, op.headers
                        )
                        op.status = resp.status
                    except ClientError as exc:
                        op.error = str(exc)
                    op.seconds = time.perf_counter() - t0
            finally:
                for conn in conns.values():
                    conn.close()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(main())
    return list(ops)


def client_exporter_options(node: KVNode) -> dict[str, Any]:
    """``OTLPSpanExporter`` options of an application sending where KV node ``node`` does:
    the rendered endpoint (https with TLS), trust bundle and token header of its environment
    (an application of the pipeline's namespace gets the same from injection)."""
    import requests

    env = node.env
    # Not from this process's environment: requests would take REQUESTS_CA_BUNDLE (a host CA
    # override a pod does not have) over the exporter's certificate_file, and any proxy.
    session = requests.Session()
    session.trust_env = False
    options: dict[str, Any] = {
        "endpoint": env["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/v1/traces",
        "session": session,
    }
    if "OTEL_EXPORTER_OTLP_CERTIFICATE" in env:
        options["certificate_file"] = env["OTEL_EXPORTER_OTLP_CERTIFICATE"]
    if env.get("OTEL_EXPORTER_OTLP_HEADERS"):
        pairs = (item.split("=", 1) for item in env["OTEL_EXPORTER_OTLP_HEADERS"].split(","))
        options["headers"] = {key.strip(): urllib.parse.unquote(value) for key, value in pairs}
    return options


def traced_client_writes(stack: Stack, keys: Sequence[str]) -> list[Op]:
    """PUTs of ``keys``, each under a CLIENT span of ``shop-frontend`` (its own SDK, exporting
    to the stack's collector as the nodes do) whose context the node continues: one edge
    client -> KV."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.propagate import inject
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(resource=Resource.create({"service.name": CLIENT_SERVICE}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(**client_exporter_options(stack.nodes[0])))
    )
    tracer = provider.get_tracer("kvtrace.tests")
    ops = []
    for i, key in enumerate(keys):
        with tracer.start_as_current_span(
            f"kv put {key.split('/')[0]}", kind=SpanKind.CLIENT
        ) as span:
            headers: dict[str, str] = {}
            inject(headers)
            op = Op(
                stack.nodes[i % len(stack.nodes)].url,
                "PUT",
                key,
                b"v",
                headers=headers,
                trace_id=format(span.get_span_context().trace_id, "032x"),
            )
            run_ops([op], concurrency=1)
            ops.append(op)
    provider.shutdown()
    return ops


def traceparent() -> tuple[str, dict[str, str]]:
    """A fresh sampled W3C parent: (trace id, headers). The node continues it."""
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def traced_put(stack: Stack, key: str) -> str:
    """One PUT of ``key`` on the first node, continuing a sampled remote parent (every mode
    keeps it); its trace id."""
    tid, headers = traceparent()
    (op,) = run_ops([Op(stack.nodes[0].url, "PUT", key, b"v", headers=headers)], concurrency=1)
    assert op.status == 204, (key, op.status, op.error)
    return tid


# --------------------------------------------------------------------------- Jaeger


def traces_of(client: JaegerClient, operation: str | None = None, limit: int = 2000) -> list[Trace]:
    """The traces of the KV service in the last half hour (the tests' stacks are fresh)."""
    return list(
        client.find_traces(
            CLUSTER, operation=operation, limit=limit, lookback=dt.timedelta(minutes=30)
        )
    )


def roots_by_key_hash(traces: Iterable[Trace]) -> dict[str, list[Trace]]:
    """Traces by the ``kvstore.key.hash`` of their coordinator (SERVER, client API) span."""
    out: dict[str, list[Trace]] = {}
    for t in traces:
        for s in t.spans:
            if s.kind == "SERVER" and s.name in (PUT_OP, GET_OP, "DELETE /v1/kv/{key}"):
                out.setdefault(str(s.attributes.get("kvstore.key.hash")), []).append(t)
                break
    return out


def wait_for_traces(
    client: JaegerClient,
    trace_ids: Iterable[str],
    timeout: float,
    complete: Callable[[str, Trace], bool] = lambda tid, trace: True,
) -> dict[str, Trace]:
    """Poll Jaeger until it has every one of ``trace_ids`` (and ``complete(id, trace)`` holds for
    each); fail after ``timeout`` seconds."""
    wanted = set(trace_ids)
    found: dict[str, Trace] = {}

    def check() -> bool:
        for tid in wanted - set(found):
            got = client.trace(tid)
            if got is not None and complete(tid, got):
                found[tid] = got
        return set(found) == wanted

    poll(
        check,
        timeout=timeout,
        interval=0.5,
        message=f"traces {sorted(wanted - set(found))} in Jaeger",
    )
    return found


def within(kept: int, n: int, p: float, sigmas: float = 5.0) -> tuple[bool, str]:
    """Whether ``kept`` of ``n`` is within ``sigmas`` binomial standard deviations of n·p.
    Refuses a sample so small that the tolerance would accept none or all kept: a ratio test
    must not pass vacuously."""
    sd = math.sqrt(n * p * (1 - p))
    if not (n * p - sigmas * sd > 0 and n * p + sigmas * sd < n):
        raise ValueError(
            f"{n} traces at ratio {p}: ±{sigmas:g}σ ({sigmas * sd:.1f}) would accept 0 or all {n} kept"
        )
    return abs(
        kept - n * p
    ) <= sigmas * sd, f"kept {kept} of {n}, expected {n * p:.1f} ± {sigmas * sd:.1f} ({sigmas:g}σ)"


def workload(stack: Stack, normal: int, errors: int, slow: int, seed: int) -> list[Op]:
    """PUTs of unique keys ``norm/``, ``fail/`` and ``slow/`` (the fault switch's prefixes)
    spread over the nodes in a shuffled order; returns them with status and latency."""
    urls = [n.url for n in stack.nodes]
    ops = [
        Op(urls[i % len(urls)], "PUT", f"{prefix}/{seed}-{i}", b"v")
        for prefix, count in (("norm", normal), ("fail", errors), ("slow", slow))
        for i in range(count)
    ]
    random.Random(seed).shuffle(ops)
    run_ops(ops, concurrency=8)
    bad = [op for op in ops if op.status != (500 if op.key.startswith("fail/") else 204)]
    assert not bad, bad[:5]
    return ops


def kept_after_markers(
    stack: Stack, marker_prefix: str = "fail/marker-", timeout: float = 90
) -> dict[str, list[Trace]]:
    """:func:`flush`, then wait until the PUT traces stop changing (the collector's exporter
    queue may still reorder a little); returns the kept traces by the key hash of their root."""
    client = stack.jaeger.client
    flush(stack, marker_prefix, timeout)

    def snapshot() -> dict[str, list[Trace]]:
        return roots_by_key_hash(traces_of(client, PUT_OP))

    stable(
        lambda: {h: sorted(len(t.spans) for t in ts) for h, ts in snapshot().items()}, timeout=30
    )
    return snapshot()


def flush(stack: Stack, error_prefix: str | None = None, timeout: float = 90) -> dict[str, Trace]:
    """Send :func:`flush_markers` and wait until each marker's own SERVER span, from the node
    it was sent to, is in Jaeger (its replicas' spans alone prove nothing about that node's
    queue); returns the marker traces by id."""
    member = {n.url: n.pod for n in stack.nodes}
    want = {m.trace_id: member[m.url] for m in flush_markers(stack.nodes, error_prefix)}

    def has_own_span(tid: str, trace: Trace) -> bool:
        return any(
            s.kind == "SERVER"
            and s.name == PUT_OP
            and s.resource.get("kvstore.member.id") == want[tid]
            for s in trace.spans
        )

    return wait_for_traces(stack.jaeger.client, want, timeout, complete=has_own_span)


def flush_markers(nodes: Sequence[KVNode], error_prefix: str | None) -> list[Op]:
    """One marker operation per node, sent after the operations under test, that every mode keeps:
    it continues a sampled remote parent (head sampling keeps it) and, with ``error_prefix``,
    fails through the fault switch (tail sampling keeps it). Each node's batch span processor
    exports in order, so once a node's marker is in Jaeger, every span that node ended before
    it has reached the collector. The markers' trace ids are in ``Op.trace_id``."""
    ops = []
    for n in nodes:
        tid, headers = traceparent()
        ops.append(
            Op(
                n.url,
                "PUT",
                f"{error_prefix or 'marker/'}{secrets.token_hex(4)}",
                b"m",
                headers=headers,
                trace_id=tid,
            )
        )
    return run_ops(ops, concurrency=len(ops))


def stable(fn: Callable[[], Any], timeout: float, settle: int = 2, interval: float = 1.0) -> Any:
    """Poll ``fn`` until it returns the same value ``settle`` times in a row; bounded."""
    deadline = time.monotonic() + timeout
    last, same = fn(), 1
    while same < settle:
        if time.monotonic() > deadline:
            raise AssertionError(f"did not settle within {timeout}s (last value {last!r})")
        time.sleep(interval)
        value = fn()
        same = same + 1 if value == last else 1
        last = value
    return last
