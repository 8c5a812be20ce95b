"""``kvtrace doctor NAME``: the troubleshooting checklist for "my traces are missing", made
executable. Each check is printed as PASS, FAIL, WARN or SKIP with its evidence and the fix.

Every ``check_*`` function is pure: it takes the evidence :func:`gather` collected (objects
as the API server returned them, the results of the OTLP and canary probes) and returns a
:class:`Check`. :func:`gather` does the I/O: read-only API calls, an empty OTLP export to the
collector, and a canary trace sent through the collector and looked up in Jaeger.

Addresses: ``--collector`` / ``--jaeger``, else the pipeline's ``status.endpoints`` (cluster
DNS names, resolvable from inside the cluster), rewritten through the development endpoint
map (``KVTRACE_ENDPOINT_MAP``, see docs/local-stack.md) when one is set.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from kvtrace.inspect import doctor_environment, injection
from kvtrace.inspect.errors import InspectError
from kvtrace.inspect.status import COMPONENT, INSTANCE, pipeline_ref
from kvtrace.inspect.urls import checked_url
from kvtrace.shared.endpoints import resolve_url
from kvtrace.shared.jaeger_client import CA_FILE_ENV, JaegerClient
from kvtrace_operator.render import canary as render_canary
from kvtrace_operator.render import names, sampling, security, sizing, tls
from kvtrace_operator.render.canary import lookup_bound_s
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.spec import PipelineSpec, parse_kvcluster, parse_pipeline
from kvtrace_operator.spec.quantities import quantity_value

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"
CONFIG_KEY = "config.yaml"
NODE_CONTAINER = "kvnode"
# Memory estimates for the resources check (documented in docs/troubleshooting.md): the
# operator's default collector and Jaeger resources are sized with the same model.
SPAN_BYTES = sizing.SPAN_BYTES
MAX_LIMIT_PERCENTAGE = 90
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
ALWAYS_ON = ("always_on", "parentbased_always_on")
DEFAULT_CANARY_SLACK_S = 20.0
CANARY_SPAN = "kvtrace doctor canary"


@dataclasses.dataclass
class Check:
    name: str
    status: str
    summary: str
    evidence: list[str] = dataclasses.field(default_factory=list)
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- helpers


def container_env(pod: Mapping[str, Any], container: str = NODE_CONTAINER) -> dict[str, Any]:
    """``{name: value}`` of a pod's container (``valueFrom`` entries map to their source)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    chosen = next(
        (c for c in containers if c.get("name") == container), containers[0] if containers else {}
    )
    return {
        e["name"]: e["value"] if "value" in e else {"valueFrom": e.get("valueFrom")}
        for e in chosen.get("env") or []
        if "name" in e
    }


def quantity_bytes(value: Any) -> int | None:
    """A Kubernetes quantity (``512Mi``, ``1G``, ``1e9``) in bytes; None when unparsable."""
    size = quantity_value(value if isinstance(value, (int, float)) else str(value or ""))
    return None if size is None else int(size)


def mib(value: float) -> str:
    return f"{value / 2**20:.0f}MiB" if value >= 2**20 else f"{value / 1024:.0f}KiB"


def traces_pipeline(config: Mapping[str, Any]) -> dict[str, Any]:
    pipelines = (config.get("service") or {}).get("pipelines") or {}
    return dict(pipelines.get("traces") or next(iter(pipelines.values()), {}) or {})


def _kind(component_name: str) -> str:
    return component_name.split("/", 1)[0]


# --------------------------------------------------------------------------- checks


def check_pipeline(cluster: Mapping[str, Any], pipeline: Mapping[str, Any] | None) -> Check:
    name = "tracing pipeline"
    ref = pipeline_ref(cluster)
    cname = names.name_of(dict(cluster))
    if not ref:
        return Check(
            name,
            FAIL,
            f"KVCluster {cname} has no spec.tracing.pipelineRef: its members run untraced",
            [f"KVCluster {cname}: spec.tracing = {(cluster.get('spec') or {}).get('tracing')!r}"],
            f"kubectl patch kvcluster {cname} --type merge -p "
            '\'{"spec":{"tracing":{"pipelineRef":{"name":"PIPELINE"}}}}\'',
        )
    if pipeline is None:
        return Check(
            name,
            FAIL,
            f"TracingPipeline {ref} (spec.tracing.pipelineRef.name) does not exist",
            [
                f"KVCluster {cname} references TracingPipeline {ref!r}; no such object in the namespace"
            ],
            f"create TracingPipeline {ref} in this namespace, or point spec.tracing.pipelineRef at an existing one",
        )
    conditions = {c.get("type"): c for c in (pipeline.get("status") or {}).get("conditions") or []}
    ready = conditions.get("Ready")
    evidence = [
        f"TracingPipeline {ref}: Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}"
        if ready
        else f"TracingPipeline {ref}: no Ready condition yet"
    ]
    delivery = conditions.get("TraceDelivery")  # the operator's own canary (docs/operator.md)
    if delivery:
        evidence.append(
            f"TracingPipeline {ref}: TraceDelivery={delivery.get('status')} {delivery.get('reason')}: "
            f"{delivery.get('message')}"
        )
    return Check(name, PASS, f"KVCluster {cname} uses TracingPipeline {ref}", evidence)


def _ready_endpoints(slices: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(ready, not ready) endpoints of a Service's EndpointSlices, by pod name."""
    ready: list[str] = []
    not_ready: list[str] = []
    for piece in slices:
        for endpoint in piece.get("endpoints") or []:
            who = (endpoint.get("targetRef") or {}).get("name") or ",".join(
                endpoint.get("addresses") or []
            )
            cond = endpoint.get("conditions") or {}
            (ready if cond.get("ready") is not False else not_ready).append(who)
    return sorted(ready), sorted(not_ready)


def check_collector_endpoints(
    services: Mapping[str, Mapping[str, Any] | None],
    slices: Mapping[str, Sequence[Mapping[str, Any]]],
    deployments: Sequence[Mapping[str, Any]],
) -> Check:
    """Every collector Service (the one applications send to and, with two tiers, the
    sampling tier's headless Service behind the load balancer) has a ready endpoint.

    ``services``: Service name → object (None when missing), front tier first; ``slices``:
    Service name → its EndpointSlices; ``deployments``: the collector Deployments."""
    name = "collector endpoints"
    evidence = []
    for dep in deployments:
        st, spec = dep.get("status") or {}, dep.get("spec") or {}
        evidence.append(
            f"Deployment {dep['metadata']['name']}: {int(st.get('readyReplicas') or 0)}/"
            f"{spec.get('replicas', 1)} replicas ready"
        )
    replicas = {d["metadata"]["name"]: (d.get("spec") or {}).get("replicas") for d in deployments}
    problems: list[tuple[str, str]] = []  # (summary, fix)
    counts = []
    for index, (svc, service) in enumerate(services.items()):
        if service is None:
            problems.append(
                (
                    f"Service {svc} does not exist",
                    "the operator creates it with the pipeline: check that the operator runs "
                    "(kvtrace status shows the pipeline's conditions and events)",
                )
            )
            continue
        ready, not_ready = _ready_endpoints(slices.get(svc) or [])
        evidence.insert(
            index,
            f"Service {svc}: {len(ready)} ready endpoint(s) {ready}"
            + (f", {len(not_ready)} not ready {not_ready}" if not_ready else ""),
        )
        counts.append(f"{svc} ({len(ready)})")
        if not ready:
            lost = (
                "spans sent to it are lost"
                if index == 0
                else "the load-balancing tier has nowhere to send spans"
            )
            fix = (
                f"kubectl scale deployment {svc} --replicas=1 (the operator restores spec.collector.replicas at "
                "its next resync; if it does not, check that it runs)"
                if replicas.get(svc) == 0
                else f"look at the collector pods: kubectl describe deployment {svc}; kubectl logs deployment/{svc}"
            )
            problems.append((f"Service {svc} has no ready endpoint: {lost}", fix))
    if problems:
        return Check(
            name, FAIL, problems[0][0], [p for p, _ in problems[1:]] + evidence, problems[0][1]
        )
    return Check(name, PASS, f"ready endpoints: {', '.join(counts)}", evidence)


def check_otlp(probe: Mapping[str, Any] | None) -> Check:
    """The collector answers an (empty) OTLP/HTTP export with 200."""
    name = "collector accepts OTLP"
    if probe is None or probe.get("skipped"):
        why = (probe or {}).get("skipped") or "no collector URL"
        return Check(
            name,
            SKIP,
            f"not verified: {why}",
            [],
            "pass --collector URL (e.g. kubectl port-forward svc/PIPELINE-collector 4318, then "
            "--collector http://localhost:4318), or run kvtrace doctor inside the cluster",
        )
    evidence = [f"POST {probe['url']}/v1/traces (empty ExportTraceServiceRequest)"]
    if probe.get("error"):
        evidence.append(f"error: {probe['error']}")
        return Check(
            name,
            FAIL,
            f"cannot send OTLP to {probe['url']}",
            evidence,
            "check the collector's Service and pods (collector endpoints check above) and that "
            "the otlp receiver listens on 0.0.0.0:4318",
        )
    evidence.append(f"HTTP {probe['status']} {str(probe.get('body') or '')[:200]}".rstrip())
    if probe.get("token_error"):
        evidence.append(f"bearer token (spec.security.auth): {probe['token_error']}")
    if probe["status"] == 200:
        return Check(name, PASS, f"{probe['url']} accepts OTLP/HTTP", evidence)
    if probe["status"] == 401:
        return Check(
            name,
            FAIL,
            f"{probe['url']} refused the export: bearer token missing or wrong",
            evidence,
            "the collector requires the token of spec.security.auth (on by default); doctor sends the "
            "one in the pipeline's token Secret (NAME-otlp-token or tokenSecretRef): it needs get on "
            "that Secret, and the collector's mounted token must be the same",
        )
    return Check(
        name,
        FAIL,
        f"{probe['url']} answered HTTP {probe['status']} to an OTLP export",
        evidence,
        "the collector refused the export: read its log (kubectl logs deployment/PIPELINE-collector); "
        "HTTP 503 usually means the memory limiter is refusing data",
    )


def expected_env(cluster: Mapping[str, Any], pipeline: Mapping[str, Any]) -> dict[str, Any]:
    """The OTel environment the pipeline gives the members (render layer, same as the operator)."""
    from kvtrace_operator.render.otel_env import otel_environment

    return {
        e["name"]: e["value"] if "value" in e else {"valueFrom": e.get("valueFrom")}
        for e in otel_environment(dict(cluster), dict(pipeline))
    }


def check_pod_env(
    cluster: Mapping[str, Any],
    pipeline: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> Check:
    """Every member pod carries the pipeline's OTel environment; which ones do not."""
    name = "members' OTel environment"
    cname = names.name_of(dict(cluster))
    if pipeline is None:
        return Check(name, SKIP, "no pipeline to compare with", [])
    if not pods:
        return Check(
            name,
            FAIL,
            f"KVCluster {cname} has no member pods",
            [],
            f"kvtrace status {cname} shows the members and why they are missing",
        )
    try:
        wanted = expected_env(cluster, pipeline)
    except ValueError as exc:  # SpecError: the pipeline cannot be rendered
        return Check(
            name,
            FAIL,
            f"the pipeline cannot be rendered: {exc}",
            [],
            "fix the TracingPipeline's spec",
        )
    bad: dict[str, list[str]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        have = container_env(pod)
        problems = []
        for var, value in wanted.items():
            if var not in have:
                problems.append(f"missing {var}")
            elif isinstance(value, str) and have[var] != value:
                problems.append(f"{var}={have[var]!r}, expected {value!r}")
        if problems:
            bad[pod["metadata"]["name"]] = problems
    checked = [
        f"{len(wanted)} variables compared on {len(pods)} pod(s): {', '.join(sorted(wanted))}"
    ]
    if not bad:
        return Check(
            name,
            PASS,
            f"all {len(pods)} member pods carry the pipeline's OTel environment",
            checked,
        )
    evidence = [f"{pod}: {'; '.join(problems)}" for pod, problems in bad.items()] + checked
    return Check(
        name,
        FAIL,
        f"{len(bad)} of {len(pods)} member pods lack the pipeline's OTel environment: "
        f"{', '.join(bad)}",
        evidence,
        "these pods run an old or hand-edited template: the operator's StatefulSet carries the "
        f"right environment; delete the listed pods (kubectl delete pod {' '.join(bad)}) so the "
        "StatefulSet recreates them, and check that nothing edits the StatefulSet by hand",
    )


def check_sampling(
    pipeline: Mapping[str, Any] | None,
    configs: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
) -> Check:
    """No head sampling under production mode; the collector tail-samples and keeps errors.

    ``configs``: collector ConfigMap name → parsed config (or an error string)."""
    name = "sampling coherent"
    if pipeline is None:
        return Check(name, SKIP, "no pipeline", [])
    spec = parse_pipeline(pipeline.get("spec"))
    mode = spec.sampling.mode
    pname = names.name_of(dict(pipeline))
    samplers: dict[str, list[str]] = {}
    for pod in pods:
        env = container_env(pod)
        value = env.get("OTEL_TRACES_SAMPLER")
        text = value if isinstance(value, str) else "(unset: the SDK default parentbased_always_on)"
        if (
            isinstance(value, str)
            and env.get("OTEL_TRACES_SAMPLER_ARG")
            and value in RATIO_SAMPLERS
        ):
            text += f" ratio {env['OTEL_TRACES_SAMPLER_ARG']}"
        samplers.setdefault(text, []).append(pod["metadata"]["name"])
    evidence = [
        f"pipeline {pname}: sampling.mode {mode}, ratio {sampling.format_ratio(sampling.effective_ratio(spec))}"
    ]
    evidence += [
        f"pods {', '.join(sorted(p))}: OTEL_TRACES_SAMPLER={s}" for s, p in sorted(samplers.items())
    ]
    tail_in: list[str] = []
    for cm, config in sorted(configs.items()):
        if not isinstance(config, Mapping):
            evidence.append(f"ConfigMap {cm}: unreadable ({config})")
            continue
        procs = traces_pipeline(config).get("processors") or []
        tails = [p for p in procs if _kind(p) == "tail_sampling"]
        if tails:
            tail_in.append(cm)
            policies = ((config.get("processors") or {}).get(tails[0]) or {}).get("policies") or []
            kinds = [f"{p.get('name')}({p.get('type')})" for p in policies]
            evidence.append(
                f"ConfigMap {cm}: traces pipeline {procs}; tail_sampling policies {kinds}"
            )
        else:
            evidence.append(f"ConfigMap {cm}: traces pipeline {procs} (no tail_sampling)")
    problems = []
    head_pods = sorted(
        p for s, pods_ in samplers.items() if any(r in s for r in RATIO_SAMPLERS) for p in pods_
    )
    if mode == sampling.PRODUCTION:
        if head_pods:
            problems.append(
                f"head sampling under production mode on {', '.join(head_pods)}: the SDK drops "
                "traces before the collector sees them, errors included"
            )
        if not tail_in:
            problems.append(
                "production mode but no collector config tail-samples: nothing keeps every error "
                "and slow trace"
            )
        elif sampling.keeps_errors(spec):
            for cm in tail_in:
                policies = (configs[cm].get("processors") or {}).get("tail_sampling", {}).get(
                    "policies"
                ) or []
                if not any(
                    p.get("type") == "status_code"
                    and "ERROR" in ((p.get("status_code") or {}).get("status_codes") or [])
                    for p in policies
                ):
                    problems.append(
                        f"ConfigMap {cm}: tail_sampling has no status_code ERROR policy, so errors "
                        "are sampled like everything else"
                    )
    elif mode in (sampling.HEAD, sampling.RETROACTIVE):
        if tail_in:
            problems.append(
                f"{mode} mode but {', '.join(tail_in)} also tail-samples: traces are sampled twice"
            )
    elif head_pods:  # development keeps everything
        problems.append(
            f"development mode keeps every span, but {', '.join(head_pods)} head-sample"
        )
    if problems:
        return Check(
            name,
            FAIL,
            problems[0],
            problems[1:] + evidence,
            "the operator renders a coherent configuration: something edited the collector ConfigMap "
            "or the StatefulSet by hand, or the operator is not running. Restore them with the "
            f"operator (kubectl delete configmap/deployment it owns are re-created), or compare with "
            f"`kvtrace render -f` of the KVCluster and TracingPipeline {pname}",
        )
    summary = {
        sampling.PRODUCTION: "production: the SDK keeps every span and the collector tail-samples "
        "(errors and slow traces kept)",
        sampling.HEAD: f"head mode: the SDK samples a ratio at the root; {sampling.HEAD_NOTE.split(': ', 1)[1]}",
        sampling.DEVELOPMENT: "development: every span is kept",
        sampling.RETROACTIVE: "retroactive: the KV nodes keep errors, slow operations and a "
        "ratio, decided when each operation ends",
    }.get(mode, mode)
    return Check(
        name,
        WARN if mode == sampling.HEAD else PASS,
        summary,
        evidence,
        "use sampling.mode production to keep every error trace" if mode == sampling.HEAD else "",
    )


def spans_per_trace(replication_factor: int) -> int:
    """The spans of one client operation's trace, at most (docs/tracing.md): the coordinator's
    SERVER span and one span per replica call, ``replication_factor`` calls when the
    coordinator holds no copy of the key (one fewer when it does: its own copy is applied
    in-process). A failed call's CLIENT span takes the place of the replica's SERVER span."""
    return 1 + replication_factor


def check_resources(
    configs: Mapping[str, Any],
    deployments: Mapping[str, Mapping[str, Any]],
    replication_factor: int,
) -> Check:
    """memory_limiter first, batch last, and their sizes fit the collector's memory limit.

    ``configs``: collector ConfigMap name → parsed config; ``deployments``: the same names →
    the collector Deployment (its container's ``resources``); ``replication_factor``: the
    KVCluster's, which sizes its traces in the tail-sampling buffer."""
    name = "batch and memory limiter"
    failures: list[str] = []
    warnings: list[str] = []
    evidence: list[str] = []
    for cm, config in sorted(configs.items()):
        if not isinstance(config, Mapping):
            failures.append(f"ConfigMap {cm}: unreadable ({config})")
            continue
        procs = list(traces_pipeline(config).get("processors") or [])
        settings = config.get("processors") or {}
        limiter_name = next((p for p in procs if _kind(p) == "memory_limiter"), None)
        batch_name = next((p for p in procs if _kind(p) == "batch"), None)
        evidence.append(f"{cm}: processors {procs}")
        if limiter_name is None:
            failures.append(
                f"{cm}: no memory_limiter in the traces pipeline: a burst can OOM-kill the collector"
            )
        elif procs[0] != limiter_name:
            failures.append(f"{cm}: memory_limiter is not the first processor")
        if batch_name is None:
            failures.append(f"{cm}: no batch processor: every span is exported on its own")
        elif procs[-1] != batch_name:
            failures.append(f"{cm}: batch is not the last processor")
        limiter = settings.get(limiter_name) or {} if limiter_name else {}
        batch = settings.get(batch_name) or {} if batch_name else {}
        limit_pct = float(limiter.get("limit_percentage") or 0)
        spike_pct = float(limiter.get("spike_limit_percentage") or 0)
        batch_size = int(batch.get("send_batch_size") or 8192)
        max_size = batch.get("send_batch_max_size")
        if limiter_name:
            evidence.append(
                f"{cm}: memory_limiter limit {limit_pct:g}%, spike {spike_pct:g}%; batch "
                f"send_batch_size {batch_size}" + (f", max {max_size}" if max_size else "")
            )
            if limiter.get("limit_mib") is None and not limit_pct:
                failures.append(f"{cm}: memory_limiter has neither limit_percentage nor limit_mib")
            if limit_pct > MAX_LIMIT_PERCENTAGE:
                failures.append(
                    f"{cm}: limit_percentage {limit_pct:g} leaves the Go runtime no room "
                    f"(keep it at most {MAX_LIMIT_PERCENTAGE})"
                )
            if spike_pct and limit_pct and spike_pct >= limit_pct:
                failures.append(
                    f"{cm}: spike_limit_percentage {spike_pct:g} is not below limit_percentage {limit_pct:g}"
                )
        if max_size and int(max_size) < batch_size:
            failures.append(
                f"{cm}: send_batch_max_size {max_size} is below send_batch_size {batch_size}"
            )
        dep = deployments.get(cm)
        containers = (
            (((dep or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        ).get("containers") or []
        memory = (
            quantity_bytes(
                ((containers[0].get("resources") or {}).get("limits") or {}).get("memory")
            )
            if containers
            else None
        )
        if memory is None:
            warnings.append(
                f"{cm}: the collector has no memory limit, so the memory limiter's percentages refer "
                "to the whole node's memory"
            )
            continue
        batch_bytes = batch_size * SPAN_BYTES
        spike_bytes = memory * spike_pct / 100
        soft_bytes = memory * (limit_pct - spike_pct) / 100
        evidence.append(
            f"{cm}: memory limit {mib(memory)}: spike allowance {mib(spike_bytes)}, soft limit "
            f"{mib(soft_bytes)}; one batch ~{mib(batch_bytes)} ({batch_size} spans x {SPAN_BYTES}B)"
        )
        if limiter_name and batch_bytes > spike_bytes:
            failures.append(
                f"{cm}: one batch (~{mib(batch_bytes)}) is larger than the memory limiter's spike "
                f"allowance ({mib(spike_bytes)} of {mib(memory)}): the limiter refuses data at every flush"
            )
        tail = settings.get(next((p for p in procs if _kind(p) == "tail_sampling"), ""), None)
        if isinstance(tail, Mapping):
            num = int(tail.get("num_traces") or 50000)
            spans = spans_per_trace(replication_factor)
            tail_bytes = num * spans * SPAN_BYTES
            evidence.append(
                f"{cm}: tail_sampling num_traces {num} x {spans} spans (replication factor "
                f"{replication_factor}): up to ~{mib(tail_bytes)} held while deciding"
            )
            if tail_bytes > soft_bytes:
                warnings.append(
                    f"{cm}: a full tail-sampling buffer (~{mib(tail_bytes)}) exceeds the soft limit "
                    f"({mib(soft_bytes)}): under load the limiter refuses spans before it fills"
                )
    fix_memory = (
        "in the TracingPipeline: give the collector more memory (spec.collector.resources.limits.memory) "
        "or lower spec.collector.batch.sendBatchSize / spec.sampling.numTraces"
    )
    if failures:
        return Check(name, FAIL, failures[0], failures[1:] + warnings + evidence, fix_memory)
    if warnings:
        return Check(name, WARN, warnings[0], warnings[1:] + evidence, fix_memory)
    return Check(
        name, PASS, "memory_limiter first, batch last, sizes fit the memory limit", evidence
    )


def check_canary(result: Mapping[str, Any] | None) -> Check:
    """A canary trace sent through the collector is found in Jaeger within the bound."""
    name = "canary trace reaches Jaeger"
    if result is None or result.get("skipped"):
        return Check(
            name,
            SKIP,
            f"not verified: {(result or {}).get('skipped') or 'no canary sent'}",
            [],
            (result or {}).get("fix", ""),
        )
    evidence = [
        f"canary trace {result['trace_id']} (service {result.get('service', '')}) sent to {result['collector']}"
    ]
    if result.get("send_error"):
        evidence.append(f"send failed: {result['send_error']}")
        return Check(
            name,
            FAIL,
            "the canary could not be sent to the collector",
            evidence,
            "see the collector checks above",
        )
    evidence.append(
        f"looked up in Jaeger at {result['jaeger']} for {result['waited']:.1f}s "
        f"(bound {result['timeout']:.0f}s)"
    )
    if result.get("jaeger_not_ready"):
        evidence.append(result["jaeger_not_ready"])
    if result.get("found"):
        return Check(name, PASS, f"found in Jaeger after {result['waited']:.1f}s", evidence)
    if result.get("jaeger_error"):
        evidence.append(f"Jaeger query failed: {result['jaeger_error']}")
        if (
            ": 401: " in result["jaeger_error"]
        ):  # spec.jaeger.query.auth (jaeger_client.JaegerClient)
            fix = (
                "pass --jaeger-token-file PATH (your OIDC access token, or kubectl get secret "
                "PIPELINE-jaeger-query-token -o jsonpath='{.data.token}' | base64 -d > PATH) or set "
                "KVTRACE_JAEGER_TOKEN"
                if "bearer token" in result["jaeger_error"]
                else "pass --jaeger-credentials-file PATH (kubectl get secret PIPELINE-jaeger-query-credentials "
                "-o jsonpath='{.data.credentials}' | base64 -d > PATH) or set KVTRACE_JAEGER_CREDENTIALS"
            )
            return Check(
                name,
                FAIL,
                f"Jaeger at {result['jaeger']} asks for query credentials",
                evidence,
                fix,
            )
        return Check(
            name,
            FAIL,
            f"cannot query Jaeger at {result['jaeger']}",
            evidence,
            "check the Jaeger pod (kubectl get deployment PIPELINE-jaeger; kvtrace status shows "
            "JaegerReady) or pass --jaeger URL",
        )
    return Check(
        name,
        FAIL,
        f"not in Jaeger after {result['timeout']:.0f}s: the collector accepted it but it "
        "was not delivered",
        evidence,
        "read the collector's log for export errors (kubectl logs deployment/PIPELINE-collector); check "
        "that Jaeger runs (JaegerReady in kvtrace status) and that its OTLP Service has endpoints",
    )


def check_resource_detection(
    config: Any, result: Mapping[str, Any] | None, collector: str
) -> Check:
    """Which detectors the edge collector runs and what each added to the canary's resource
    (``result``: :func:`send_canary`'s, with the resource read back from Jaeger)."""
    name = "resource detection"
    detectors = doctor_environment.detectors_of(config) if isinstance(config, dict) else []
    if not detectors:
        return Check(name, SKIP, f"no resource_detection in ConfigMap {collector}")
    listed = f"{collector} runs detectors {', '.join(detectors)}"
    if result is None or not result.get("found"):
        return Check(name, SKIP, "not verified: no canary read back from Jaeger", [listed])
    findings = doctor_environment.findings(detectors, result["resource"])
    evidence = [listed] + [
        f"{detector} found {', '.join(attrs)}" for detector, attrs in findings.found.items()
    ]
    if "env" in detectors:
        evidence.append("env: the collector has no OTEL_RESOURCE_ATTRIBUTES of its own")
    if findings.silent:
        evidence += [f"{detector} found nothing" for detector in findings.silent]
        return Check(
            name,
            WARN,
            f"{', '.join(findings.silent)} found nothing on the canary",
            evidence,
            "; ".join(doctor_environment.fix_for(d, collector) for d in findings.silent),
        )
    return Check(
        name, PASS, f"{', '.join(findings.found) or 'env'} found what they look for", evidence
    )


# --------------------------------------------------------------------------- report


def check_injection(views: Sequence[Mapping[str, Any]]) -> Check:
    """The workloads of the namespace asking for injection (inspect/injection.py): FAIL when
    a running pod is not injected, WARN when an injected one is stale or misses its token."""
    if not views:
        return Check("injection", SKIP, "no pod of this namespace asks for kvtrace.dev/inject")
    evidence, missing, warned = [], 0, 0
    for view in views:
        for pod in view["pods"]:
            state = "injected" if pod["injected"] else "NOT injected"
            evidence.append(
                f"{view['workload']} pod {pod['name']} ({view['pipeline']}): {state}"
                + (f": {pod['problem']}" if pod["problem"] else "")
            )
            missing += not pod["injected"]
            warned += bool(pod["injected"] and pod["problem"])
    total = sum(len(view["pods"]) for view in views)
    fix = "see each pod's reason; docs/injection.md lists them with their fixes"
    if missing:
        return Check(
            "injection",
            FAIL,
            f"{missing} of {total} pod(s) asking for injection are not injected",
            evidence,
            fix,
        )
    if warned:
        return Check(
            "injection", WARN, f"{warned} of {total} injected pod(s) need attention", evidence, fix
        )
    return Check(
        "injection", PASS, f"all {total} pod(s) asking for injection are injected", evidence
    )


def failed(checks: Sequence[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def render(checks: Sequence[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"[{check.status}] {check.name}: {check.summary}")
        lines += [f"       {line}" for line in check.evidence]
        if check.fix and check.status in (FAIL, WARN, SKIP):
            lines.append(f"       fix: {check.fix}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in (PASS, FAIL, WARN, SKIP)}
    lines.append(
        f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[WARN]} warnings, "
        f"{counts[SKIP]} skipped (not verified)"
    )
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check]) -> str:
    return (
        json.dumps({"failed": failed(checks), "checks": [c.to_dict() for c in checks]}, indent=2)
        + "\n"
    )


def canary_timeout_s(pipeline: Mapping[str, Any] | None, given: str | None) -> float:
    from kvtrace.inspect.jaeger import parse_duration_ns

    if given:
        return parse_duration_ns(given, "--canary-timeout") / 1e9
    try:
        return lookup_bound_s(parse_pipeline((pipeline or {}).get("spec")), DEFAULT_CANARY_SLACK_S)
    except SpecError:
        return 10.0 + DEFAULT_CANARY_SLACK_S


def canary_duration_ns(pipeline: Mapping[str, Any] | None) -> int:
    """Longer than the latency threshold, so production tail sampling keeps the canary."""
    try:
        return render_canary.canary_duration_ns(parse_pipeline((pipeline or {}).get("spec")))
    except SpecError:
        return 600_000_000


# --------------------------------------------------------------------------- I/O edge


def _local_name_unresolvable(url: str) -> bool:
    """A cluster-internal name that does not resolve here (outside the cluster, no endpoint map)."""
    host = urlsplit(url).hostname or ""
    if not host.endswith((".svc", ".svc.cluster.local", ".cluster.local")):
        return False
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return True
    return False


def resolve_address(
    given: str | None, from_status: str | None, parameter: str
) -> tuple[str | None, bool]:
    """The URL to use and whether the user gave it (``--collector``/``--jaeger``)."""
    if given:
        return checked_url(given.rstrip("/"), parameter), True
    if from_status:
        return resolve_url(from_status.rstrip("/")), False
    return None, False


def collector_token(
    kube: Any, namespace: str, pipeline: Mapping[str, Any], spec: PipelineSpec
) -> tuple[str | None, str]:
    """(bearer token, why there is none): the token the pipeline's collector requires
    (``spec.security.auth``, on by default), read from its Secret as the operator's canary
    does; (None, "") without auth."""
    if not security.auth(spec):
        return None, ""
    ref = security.token_ref(spec, names.name_of(dict(pipeline)))
    token, why = secret_text(kube, namespace, ref["name"], ref["key"])
    return (token.strip() if token is not None else None), why


def secret_text(kube: Any, namespace: str, name: str, key: str) -> tuple[str | None, str]:
    """(the text of Secret ``name``'s ``key``, why there is none)."""
    try:
        secret = kube.get("Secret", name, namespace)
    except InspectError as exc:
        return None, str(exc)
    raw = ((secret or {}).get("data") or {}).get(key)
    if raw is None:
        return None, f"Secret {namespace}/{name} (key {key}) not found"
    try:
        return base64.b64decode(raw).decode(), ""
    except (binascii.Error, UnicodeDecodeError):
        return None, f"Secret {namespace}/{name}: key {key} is not UTF-8 text"


def collector_trust(
    kube: Any, namespace: str, pipeline: Mapping[str, Any], spec: PipelineSpec
) -> tuple[str | None, str]:
    """(CA bundle PEM, why there is none): what the pipeline's clients trust when its collector
    serves TLS (``spec.security.tls``, on by default), read from its Secret as the operator's
    canary does; (None, "") without TLS."""
    settings = security.tls(spec)
    if settings is None:
        return None, ""
    return secret_text(kube, namespace, *tls.client_ca(settings, names.name_of(dict(pipeline))))


def probe_otlp(
    url: str | None,
    user_given: bool,
    parameter: str = "--collector",
    *,
    token: str | None = None,
    token_error: str = "",
    ca_pem: str | None = None,
    server_hostname: str | None = None,
) -> dict[str, Any]:
    from kvtrace import canary as otlp

    if url is None:
        return {"skipped": "the pipeline reports no collector endpoint yet"}
    if not user_given and _local_name_unresolvable(url):
        return {"skipped": f"{urlsplit(url).hostname} does not resolve from here"}
    try:
        status, body = otlp.post(
            url, {"resourceSpans": []}, token=token, ca_pem=ca_pem, server_hostname=server_hostname
        )
    except otlp.SEND_ERRORS as exc:
        return {"url": url, "error": f"{otlp.error_text(exc)} ({parameter})"}
    return {
        "url": url,
        "status": status,
        "body": body,
        **({"token_error": token_error} if token_error else {}),
    }


def send_canary(
    collector: str,
    jaeger: str | None,
    jaeger_given: bool,
    *,
    pipeline: Mapping[str, Any] | None,
    cluster_name: str,
    timeout: float,
    jaeger_not_ready: str = "",
    token: str | None = None,
    ca_pem: str | None = None,
    server_hostname: str | None = None,
    jaeger_ca_pem: str | None = None,
    jaeger_server_hostname: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    from kvtrace import canary as otlp

    if jaeger is None:
        return {
            "skipped": "Jaeger is disabled in the pipeline and no --jaeger URL was given",
            "fix": "pass --jaeger URL of the backend the pipeline exports to",
        }
    if not jaeger_given and _local_name_unresolvable(jaeger) and not jaeger_not_ready:
        return {
            "skipped": f"{urlsplit(jaeger).hostname} does not resolve from here",
            "fix": "pass --jaeger URL (e.g. kubectl port-forward svc/PIPELINE-jaeger-query 16686, then "
            "--jaeger http://localhost:16686)",
        }
    trace_id, span_id = otlp.new_ids()
    end = time.time_ns()
    request = otlp.canary_request(
        trace_id,
        span_id,
        start_ns=end - canary_duration_ns(pipeline),
        end_ns=end,
        service=otlp.DOCTOR_SERVICE,
        name=CANARY_SPAN,
        attributes={"kvtrace.doctor.cluster": cluster_name},
    )
    result: dict[str, Any] = {
        "trace_id": trace_id,
        "service": otlp.DOCTOR_SERVICE,
        "collector": collector,
        "jaeger": jaeger,
        "timeout": timeout,
        "waited": 0.0,
        "found": False,
    }
    if jaeger_not_ready:
        result["jaeger_not_ready"] = jaeger_not_ready
    try:
        status, body = otlp.post(
            collector, request, token=token, ca_pem=ca_pem, server_hostname=server_hostname
        )
        if status != 200:
            result["send_error"] = f"HTTP {status} {body[:200]}"
            return result
    except otlp.SEND_ERRORS as exc:
        result["send_error"] = otlp.error_text(exc)
        return result
    started = time.monotonic()
    client = JaegerClient(
        jaeger, timeout=3.0, ca_pem=jaeger_ca_pem, server_hostname=jaeger_server_hostname
    )
    while True:
        try:
            trace = client.trace(trace_id)
            if trace is not None:
                result["found"] = True
                # What the collector added to it: the resource detection check reads it.
                result["resource"] = dict(trace.spans[0].resource) if trace.spans else {}
                result.pop("jaeger_error", None)
        except otlp.LOOKUP_ERRORS as exc:
            result["jaeger_error"] = otlp.error_text(exc)
        result["waited"] = time.monotonic() - started
        if result["found"] or result["waited"] >= timeout:
            return result
        sleep(0.5)


def _parse_config(cm: Mapping[str, Any] | None) -> Any:
    if cm is None:
        return "ConfigMap missing"
    text = (cm.get("data") or {}).get(CONFIG_KEY)
    if text is None:
        return f"no {CONFIG_KEY} key"
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        return f"not YAML: {exc}"


def run(
    kube: Any,
    namespace: str,
    name: str | None,
    *,
    collector: str | None = None,
    jaeger: str | None = None,
    canary: bool = True,
    canary_timeout: str | None = None,
) -> list[Check]:
    """Gather the evidence for KVCluster ``name`` and run every check; without ``name``,
    only the namespace's injection check."""
    if name is None:
        return [check_injection(injection.gather(kube, namespace))]
    checks = run_cluster(
        kube,
        namespace,
        name,
        collector=collector,
        jaeger=jaeger,
        canary=canary,
        canary_timeout=canary_timeout,
    )
    return [*checks, check_injection(injection.gather(kube, namespace))]


def run_cluster(
    kube: Any,
    namespace: str,
    name: str,
    *,
    collector: str | None = None,
    jaeger: str | None = None,
    canary: bool = True,
    canary_timeout: str | None = None,
) -> list[Check]:
    """The checks of KVCluster ``name`` and its pipeline."""
    cluster = kube.get("KVCluster", name, namespace)
    if cluster is None:
        raise InspectError(f"NAME: no KVCluster named {name!r} in namespace {namespace}")
    timeout = canary_timeout_s(None, canary_timeout) if canary_timeout else None  # validate early
    ref = pipeline_ref(cluster)
    pipeline = kube.get("TracingPipeline", ref, namespace) if ref else None
    checks = [check_pipeline(cluster, pipeline)]
    selector = {INSTANCE: name, COMPONENT: "kvnode"}
    pods = [
        p
        for p in kube.list("Pod", namespace, selector)
        if not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    if pipeline is None:
        checks.append(check_pod_env(cluster, None, pods))
        return checks
    pname = names.name_of(pipeline)
    spec = parse_pipeline(pipeline.get("spec"))
    tiers = [names.collector(pname)] + (
        [names.sampling_collector(pname)] if sampling.two_tier(spec) else []
    )
    deployments = {t: d for t in tiers if (d := kube.get("Deployment", t, namespace)) is not None}
    services = {
        t: kube.get("Service", t, namespace) for t in tiers
    }  # each tier's Service has its name
    slices = {
        t: kube.list("EndpointSlice", namespace, {"kubernetes.io/service-name": t}) for t in tiers
    }
    configs = {t: _parse_config(kube.get("ConfigMap", t, namespace)) for t in tiers}
    endpoints = (pipeline.get("status") or {}).get("endpoints") or names.pipeline_endpoints(
        dict(pipeline)
    )

    checks.append(
        check_collector_endpoints(
            services, slices, [deployments[t] for t in tiers if t in deployments]
        )
    )
    collector_url, collector_given = resolve_address(
        collector, endpoints.get("otlpHttp"), "--collector"
    )
    token, token_error = collector_token(kube, namespace, pipeline, spec)
    # TLS (on by default): trust the pipeline's CA and check the certificate against the
    # Service name, whatever address (--collector, a port-forward, the endpoint map) is dialled.
    ca_pem, ca_error = collector_trust(kube, namespace, pipeline, spec)
    service_host = urlsplit(endpoints.get("otlpHttp") or "").hostname if ca_pem else None
    probe = probe_otlp(
        collector_url,
        collector_given,
        token=token,
        token_error=token_error,
        ca_pem=ca_pem,
        server_hostname=service_host,
    )
    if ca_error and "error" in probe:
        probe["error"] += f"; CA bundle (spec.security.tls): {ca_error}"
    otlp_check = check_otlp(probe)
    checks.append(otlp_check)
    checks.append(check_pod_env(cluster, pipeline, pods))
    checks.append(check_sampling(pipeline, configs, pods))
    factor = parse_kvcluster(cluster.get("spec")).replication_factor
    checks.append(check_resources(configs, deployments, factor))

    canary_result: dict[str, Any] | None = None
    if not canary:
        checks.append(check_canary({"skipped": "--no-canary"}))
    elif otlp_check.status != PASS:
        checks.append(
            check_canary({"skipped": "the collector does not accept OTLP from here (see above)"})
        )
    else:
        jaeger_url, jaeger_given = resolve_address(jaeger, endpoints.get("jaegerQuery"), "--jaeger")
        not_ready = ""
        if spec.jaeger.enabled:
            dep = kube.get("Deployment", names.jaeger(pname), namespace)
            ready = int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)
            if not ready:
                not_ready = f"Deployment {names.jaeger(pname)}: no ready replica"
        # Jaeger's https query port serves a leaf of the same CA (unless --jaeger-ca-file chose).
        query_tls = bool(
            ca_pem
            and jaeger_url
            and jaeger_url.startswith("https://")
            and not os.environ.get(CA_FILE_ENV)
        )
        canary_result = send_canary(
            str(probe["url"]),
            jaeger_url,
            jaeger_given,
            pipeline=pipeline,
            cluster_name=name,
            timeout=timeout or canary_timeout_s(pipeline, None),
            jaeger_not_ready=not_ready,
            token=token,
            ca_pem=ca_pem,
            server_hostname=service_host,
            jaeger_ca_pem=ca_pem if query_tls else None,
            jaeger_server_hostname=urlsplit(endpoints.get("jaegerQuery") or "").hostname
            if query_tls
            else None,
        )
        checks.append(check_canary(canary_result))
    edge = names.collector(pname)
    checks.append(check_resource_detection(configs[edge], canary_result, edge))
    return checks
