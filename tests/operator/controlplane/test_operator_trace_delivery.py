"""The TraceDelivery condition and the operator's own reconcile spans on the local cluster,
with the real collector and Jaeger run behind their pods by the pod runner (reached through
the development endpoint map, as the operator on the host reaches them).

Each failure is made by breaking exactly what it names: the collector and Jaeger processes
not running yet (the Service names resolve nowhere), Jaeger's process stopped, then the
collector's. The operator keeps running throughout (scaling a Deployment to zero would be
repaired by its next resync, so the processes behind the pods are stopped instead)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvtrace.devstack import tools
from kvtrace.devstack.podrender import HOST_CA_OVERRIDES
from kvtrace.shared.endpoints import resolve_url
from kvtrace.shared.jaeger_client import JaegerClient, Trace

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0
PROGRAMS = {"otelcol": "otelcol-kvtrace", "jaeger": "jaeger"}
KVTRACE = str(Path(sys.executable).parent / "kvtrace")
FAST_CANARY = ("--canary-interval", "2", "--canary-timeout", "4")


def pipeline(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces"},
        "spec": {"sampling": {"decisionWait": "1s", "latencyThreshold": "200ms"}, **spec},
    }


def start_backends(pod_runner: Any, endpoint_map: Any, poll: Any) -> tuple[Any, Any]:
    """(Jaeger's runner, the collector's runner). Jaeger first: the collector's config names
    Jaeger's OTLP Service, rewritten to Jaeger's address once that is in the endpoint map."""

    def command(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        return [str(tools.binary(PROGRAMS[container["name"]]))]

    jaeger = pod_runner("app.kubernetes.io/component=jaeger", resolve_command=command)
    poll(
        lambda: any(key.startswith("traces-jaeger-otlp.") for key in endpoint_map.entries()),
        timeout=TIMEOUT,
        message="Jaeger in the endpoint map",
    )
    return jaeger, pod_runner("app.kubernetes.io/component=collector", resolve_command=command)


def jaeger_client(kube_ns: Any, endpoint_map: Any) -> JaegerClient:
    """Jaeger's query API as the pipeline reports it: https with TLS (the default), verified
    with the pipeline's trust bundle."""
    query = kube_ns.get("tracingpipeline", "traces")["status"]["endpoints"]["jaegerQuery"]
    trust = (kube_ns.get("secret", "traces-tls-trust") or {}).get("data", {}).get("ca.crt")
    ca_pem = base64.b64decode(trust).decode() if trust and query.startswith("https://") else None
    return JaegerClient(resolve_url(query, endpoint_map.path), timeout=5, ca_pem=ca_pem)


def delivery(kube_ns: Any, status: str, reason: str) -> dict[str, Any] | None:
    cond = kube_ns.condition("tracingpipeline", "traces", "TraceDelivery")
    return (
        cond if cond is not None and (cond["status"], cond["reason"]) == (status, reason) else None
    )


def kvtrace_status(local_cluster: Any, namespace: str) -> str:
    result = subprocess.run(
        [KVTRACE, "status", "-n", namespace, "traces"],
        capture_output=True,
        text=True,
        timeout=60,
        env=local_cluster.env(),
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def condition_row(output: str, type_: str) -> list[str]:
    """``[STATUS, REASON]`` of a condition in ``kvtrace status``'s table."""
    row = next(line.split() for line in output.splitlines() if line.split()[:1] == [type_])
    return row[1:3]


def events(kube_ns: Any, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kube_ns.list("events")
        if e.get("reason") == reason
        and e.get("involvedObject", {}).get("kind") == "TracingPipeline"
    ]


@pytest.mark.operator_args(*FAST_CANARY)
def test_trace_delivery_follows_the_collector_and_jaeger(
    operator: Any, kube_ns: Any, local_cluster: Any, pod_runner: Any, endpoint_map: Any, poll: Any
) -> None:
    kube_ns.apply(pipeline())
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True"),
        timeout=TIMEOUT,
        message="pipeline Ready",
    )

    # Nothing runs behind the pods yet: the collector's Service name resolves nowhere.
    unreachable = poll(
        lambda: delivery(kube_ns, "False", "CollectorUnreachable"),
        timeout=TIMEOUT,
        message="TraceDelivery False/CollectorUnreachable before the collector runs",
    )
    assert (
        "could not be sent to https://traces-collector." in unreachable["message"]
    )  # TLS by default
    assert unreachable["message"].endswith("no canary delivered yet")
    output = kvtrace_status(local_cluster, kube_ns.namespace)
    assert condition_row(output, "TraceDelivery") == ["False", "CollectorUnreachable"], output
    assert condition_row(output, "Ready") == ["True", "PipelineReady"], (
        output
    )  # Ready ignores delivery

    jaeger, collector = start_backends(pod_runner, endpoint_map, poll)
    delivered = poll(
        lambda: delivery(kube_ns, "True", "Delivered"),
        timeout=TIMEOUT,
        message="TraceDelivery True/Delivered once collector and Jaeger run",
    )
    record = kube_ns.get("tracingpipeline", "traces")["status"]["traceDelivery"]
    assert set(record) >= {"lastProbeTime", "lastSuccessTime", "latencySeconds", "traceID"}, record
    assert (
        "found in Jaeger at https://traces-jaeger-query." in delivered["message"]
    )  # its leaf (TLS default)
    trace: Trace | None = jaeger_client(kube_ns, endpoint_map).trace(record["traceID"])
    assert trace is not None and trace.services == {"kvtrace-operator-canary"}
    assert trace.spans[0].attributes["kvtrace.canary.pipeline"] == f"{kube_ns.namespace}/traces"
    assert poll(
        lambda: events(kube_ns, "TraceDelivered"), timeout=TIMEOUT, message="TraceDelivered event"
    )
    output = kvtrace_status(local_cluster, kube_ns.namespace)
    assert condition_row(output, "TraceDelivery") == ["True", "Delivered"], output
    assert "trace delivery: last canary" in output, output

    # Jaeger stopped: the collector still accepts the canary, Jaeger never has it.
    jaeger.stop()
    lost = poll(
        lambda: delivery(kube_ns, "False", "NotFoundInJaeger"),
        timeout=TIMEOUT,
        message="TraceDelivery False/NotFoundInJaeger once Jaeger stops",
    )
    assert "; last delivered at 20" in lost["message"], lost[
        "message"
    ]  # a canary got through before
    assert "last Jaeger query error" in lost["message"], lost["message"]
    warned = poll(
        lambda: [
            e for e in events(kube_ns, "TraceDeliveryFailed") if "NotFoundInJaeger" in e["message"]
        ],
        timeout=TIMEOUT,
        message="TraceDeliveryFailed event",
    )
    assert warned[0]["type"] == "Warning"
    output = kvtrace_status(local_cluster, kube_ns.namespace)
    assert condition_row(output, "TraceDelivery") == ["False", "NotFoundInJaeger"], output
    assert condition_row(output, "Ready") == ["True", "PipelineReady"], output

    # The collector's process stopped too: nothing answers on its Service any more.
    collector.stop()
    poll(
        lambda: delivery(kube_ns, "False", "CollectorUnreachable"),
        timeout=TIMEOUT,
        message="TraceDelivery False/CollectorUnreachable once the collector stops",
    )


def reconcile_traces(client: JaegerClient, name: str) -> list[Trace]:
    """Traces of the operator whose root is the reconcile of KVCluster ``name``."""
    found = []
    for trace in client.find_traces("kvtrace-operator", limit=200):
        root = trace.root()
        if (
            root is not None
            and root.name == "reconcile KVCluster"
            and root.attributes.get("kvtrace.resource.name") == name
        ):
            found.append(trace)
    return found


@pytest.fixture
def traced_operator(
    operator: Any, local_cluster: Any, kube_ns: Any, endpoint_map: Any, tmp_path: Path
) -> Iterator[None]:
    """The operator with ``--trace-pipeline NS/traces`` and the canary off (the namespace is
    known only now, so this one replaces the fixture's operator)."""
    operator.stop()
    log_path = tmp_path / "traced-operator.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                KVTRACE,
                "operator",
                "run",
                "-n",
                kube_ns.namespace,
                "--liveness",
                "none",
                "--metrics-port",
                "0",
                "--resync-interval",
                "3",
                "--retry-backoff",
                "1",
                "--canary-interval",
                "off",
                "--trace-pipeline",
                f"{kube_ns.namespace}/traces",
            ],
            # As in its pod: no host CA bundle overriding the exporter's (the pipeline's) CA.
            env={
                **{k: v for k, v in local_cluster.env().items() if k not in HOST_CA_OVERRIDES},
                "PYTHONUNBUFFERED": "1",
                "KVTRACE_ENDPOINT_MAP": str(endpoint_map.path),
                "OTEL_BSP_SCHEDULE_DELAY": "500",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        sys.stderr.write(
            f"\n--- traced operator log (tail) ---\n{log_path.read_text(errors='replace')[-6000:]}\n"
        )


def test_operator_reconciles_are_traced_into_the_pipeline_it_names(
    traced_operator: None, kube_ns: Any, kubectl: Any, pod_runner: Any, endpoint_map: Any, poll: Any
) -> None:
    """With --trace-pipeline (and the pipeline requiring a bearer token, over the default TLS),
    every reconcile is a trace of service kvtrace-operator; the canary, off here, reads
    Unknown/Disabled."""
    token = secrets.token_urlsafe(24)
    kube_ns.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "otlp-token"},
            "data": {"token": base64.b64encode(token.encode()).decode()},
        }
    )
    kube_ns.apply(
        pipeline(
            sampling={"mode": "development"},
            security={
                "auth": {"enabled": True, "tokenSecretRef": {"name": "otlp-token", "key": "token"}}
            },
        )
    )
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True"),
        timeout=TIMEOUT,
        message="pipeline Ready",
    )
    start_backends(pod_runner, endpoint_map, poll)
    cluster = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv"},
        "spec": {"replicas": 3, "tracing": {"pipelineRef": {"name": "traces"}}},
    }
    kube_ns.apply(cluster)
    client = jaeger_client(kube_ns, endpoint_map)
    traces = poll(
        lambda: reconcile_traces(client, "kv"),
        timeout=TIMEOUT,
        message="a reconcile span of KVCluster kv in Jaeger",
    )
    root = traces[0].root()
    assert root is not None
    assert root.attributes["k8s.namespace.name"] == kube_ns.namespace
    assert root.attributes["kvtrace.resource.kind"] == "KVCluster"
    assert root.attributes["kvtrace.resource.generation"] >= 1
    assert root.attributes["kvtrace.reconcile.outcome"] in ("success", "invalid_spec")
    steps = {span.name for trace in traces for span in trace.spans}
    assert {"render", "drain check", "write status"} <= steps, steps
    assert "apply children" in steps or "observe workloads" in steps, steps
    pipeline_roots = [
        t.root()
        for t in client.find_traces("kvtrace-operator", operation="reconcile TracingPipeline")
    ]
    assert any(
        r is not None and r.attributes["kvtrace.resource.name"] == "traces" for r in pipeline_roots
    )
    disabled = kube_ns.condition("tracingpipeline", "traces", "TraceDelivery")
    assert disabled is not None and (disabled["status"], disabled["reason"]) == (
        "Unknown",
        "Disabled",
    )

    # A rolling step shows up too: a changed spec is applied in its own reconcile trace.
    kubectl(
        "-n",
        kube_ns.namespace,
        "patch",
        "kvcluster",
        "kv",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"replicas": 4}}),
    )

    def applied_generation_2() -> list[Trace]:
        return [
            t
            for t in reconcile_traces(client, "kv")
            if t.root() is not None
            and t.root().attributes["kvtrace.resource.generation"] == 2  # type: ignore[union-attr]
            and any(
                s.name == "apply children" and s.attributes.get("kvtrace.children.updated", 0) > 0
                for s in t.spans
            )
        ]

    poll(
        applied_generation_2,
        timeout=TIMEOUT,
        message="the scale-up reconcile (generation 2) traced",
    )


@pytest.mark.operator_args(*FAST_CANARY)
def test_canary_with_auth_and_tls(
    operator: Any, kube_ns: Any, pod_runner: Any, endpoint_map: Any, poll: Any
) -> None:
    """The canary carries the pipeline's bearer token and trusts its managed CA, the
    certificate checked against the collector's Service name, not the local address: the
    collector accepts it. Without the token's Secret the canary is not sent at all."""
    token = secrets.token_urlsafe(24)
    kube_ns.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "otlp-token"},
            "data": {"token": base64.b64encode(token.encode()).decode()},
        }
    )
    kube_ns.apply(
        pipeline(
            security={
                "auth": {"enabled": True, "tokenSecretRef": {"name": "otlp-token", "key": "token"}},
                "tls": {"enabled": True, "mode": "managed"},
            }
        )
    )
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True"),
        timeout=TIMEOUT,
        message="pipeline Ready",
    )
    start_backends(pod_runner, endpoint_map, poll)

    def accepted() -> dict[str, Any] | None:
        return delivery(kube_ns, "True", "Delivered") or delivery(
            kube_ns, "False", "NotFoundInJaeger"
        )

    cond = poll(accepted, timeout=TIMEOUT, message="the canary accepted by the auth+TLS collector")
    assert "https://traces-collector." in cond["message"], cond["message"]
    # Jaeger's query port serves its leaf too (docs/security.md): the lookup verifies it and gets an answer.
    assert "https://traces-jaeger-query." in cond["message"], cond["message"]
    assert "Jaeger query error" not in cond["message"], cond["message"]

    kube_ns.run("delete", "secret", "otlp-token")
    missing = poll(
        lambda: delivery(kube_ns, "False", "CredentialsUnavailable"),
        timeout=TIMEOUT,
        message="TraceDelivery False/CredentialsUnavailable once the token's Secret is gone",
    )
    assert "Secret otlp-token (spec.security.auth token) does not exist" in missing["message"]
