"""Status of KVCluster and TracingPipeline, computed from the resource and its children.

Pure functions (the standard library and the other pure render modules only): the handlers
observe the children (the objects returned by server-side apply, or read back), summarise
them with :func:`workload_summary`, and pass the summaries here with the current time.

Conditions follow the Kubernetes API conventions: ``type``, ``status`` ("True", "False",
"Unknown"), ``reason`` (CamelCase), ``message`` (for humans), ``lastTransitionTime`` (kept
while the status does not change) and ``observedGeneration``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kvtrace_operator.render import canary, names, sampling
from kvtrace_operator.render.checksum import checksum
from kvtrace_operator.render.consumer_tokens import WORKLOAD
from kvtrace_operator.render.kvcluster import quorum
from kvtrace_operator.render.labels import (
    CHECKSUM_ANNOTATION,
    COLLECTOR,
    COLLECTOR_LOADBALANCER,
    COLLECTOR_SAMPLING,
    JAEGER,
    KVNODE,
    selector_string,
)
from kvtrace_operator.spec import PipelineSpec, parse_kvcluster, parse_pipeline

COMPONENT_LABEL = "app.kubernetes.io/component"

# KVCluster phases (a summary for humans and printer columns; conditions are the API).
PHASE_PENDING = "Pending"
PHASE_PROGRESSING = "Progressing"
PHASE_RUNNING = "Running"
PHASE_DEGRADED = "Degraded"
PHASE_FAILED = "Failed"

# Tracing states the handlers report for a KVCluster (see tracing_state()).
TRACING_CONFIGURED = "PipelineConfigured"
TRACING_NOT_FOUND = "PipelineNotFound"
TRACING_INVALID = "PipelineInvalid"
TRACING_DISABLED = "TracingDisabled"

# --------------------------------------------------------------------------- conditions


def condition(
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> dict[str, Any]:
    """One condition; ``status`` may be a bool or one of "True", "False", "Unknown"."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    result: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def _condition_maker(generation: int | None, now: str) -> Callable[..., dict[str, Any]]:
    """condition() with the resource's generation and the current time filled in."""

    def cond(type_: str, status: bool | str, reason: str, message: str) -> dict[str, Any]:
        return condition(type_, status, reason, message, generation=generation, now=now)

    return cond


def merge_conditions(
    previous: Iterable[Mapping[str, Any]] | None, current: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``current`` with each ``lastTransitionTime`` kept from ``previous`` when the status
    of that condition type did not change. Order follows ``current``."""
    before = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    merged = []
    for cond in current:
        old = before.get(cond["type"])
        if (
            old is not None
            and old.get("status") == cond["status"]
            and old.get("lastTransitionTime")
        ):
            cond = {**cond, "lastTransitionTime": old["lastTransitionTime"]}
        merged.append(cond)
    return merged


def find_condition(status: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in (status or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


# --------------------------------------------------------------------------- children


def workload_summary(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The rollout state of a StatefulSet or Deployment (as returned by the API server)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    desired = spec.get("replicas")
    desired = 1 if desired is None else int(desired)
    generation = int(meta.get("generation") or 0)
    observed = int(st.get("observedGeneration") or 0)
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    replicas = int(st.get("replicas") or 0)
    rolled_out = observed >= generation and updated >= desired and replicas <= desired
    if obj.get("kind") == "StatefulSet":
        current, target = st.get("currentRevision"), st.get("updateRevision")
        rolled_out = rolled_out and (not target or current == target)
    template = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    return {
        "kind": obj.get("kind"),
        "configChecksum": template.get(CHECKSUM_ANNOTATION, ""),
        "name": meta.get("name"),
        "component": (meta.get("labels") or {}).get(COMPONENT_LABEL, ""),
        "desired": desired,
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "rolledOut": rolled_out,
        "ready": rolled_out and ready >= desired,
    }


COLLECTOR_COMPONENTS = frozenset({COLLECTOR, COLLECTOR_LOADBALANCER, COLLECTOR_SAMPLING})


def _component_is(workload: Mapping[str, Any], components: frozenset[str]) -> bool:
    return str(workload.get("component", "")) in components


# --------------------------------------------------------------------------- KVCluster


def tracing_state(
    pipeline_name: str | None,
    *,
    found: bool,
    error: str | None = None,
    endpoint: str | None = None,
    mode: str | None = None,
    sampler: str = "",
    awaited_s: float | None = None,
) -> dict[str, Any]:
    """What the handler learned about the referenced pipeline, for kvcluster_status().
    ``awaited_s``: a new cluster waits that long for a pipeline not found (yet) before its
    members start untraced."""
    if not pipeline_name:
        return {
            "reason": TRACING_DISABLED,
            "pipeline": None,
            "message": "spec.tracing.pipelineRef is not set: the cluster runs untraced",
        }
    if not found:
        then = (
            "the cluster runs untraced until it appears"
            if awaited_s is None
            else f"the members start once it does, or untraced {awaited_s:g}s after the "
            "cluster's creation (a pipeline applied with the cluster may come a moment later)"
        )
        return {
            "reason": TRACING_NOT_FOUND,
            "pipeline": pipeline_name,
            "message": f"TracingPipeline {pipeline_name!r} (spec.tracing.pipelineRef.name) "
            f"does not exist in this namespace: {then}",
        }
    if error:
        return {
            "reason": TRACING_INVALID,
            "pipeline": pipeline_name,
            "message": f"TracingPipeline {pipeline_name!r} is invalid ({error}): "
            "the cluster runs untraced until it is fixed",
        }
    where = f" to {endpoint}" if endpoint else ""
    how = f" (sampling mode {mode})" if mode else ""
    return {
        "reason": TRACING_CONFIGURED,
        "pipeline": pipeline_name,
        "sampler": sampler,
        "message": f"spans are exported{where} through TracingPipeline {pipeline_name!r}{how}",
    }


def kvcluster_status(
    cluster: Mapping[str, Any],
    *,
    statefulset: Mapping[str, Any] | None,
    tracing: Mapping[str, Any],
    now: str,
    spec_error: str | None = None,
    draining: Sequence[str] = (),
) -> dict[str, Any]:
    """The full ``status`` of a KVCluster.

    ``statefulset``: the workload_summary() of its StatefulSet as observed (None when it does
    not exist yet); ``tracing``: from tracing_state(); ``spec_error``: why the operator
    rejected the spec (nothing was applied then); ``draining``: members that left the peers
    file and are still handing their data over (the StatefulSet keeps them meanwhile)."""
    previous = cluster.get("status") or {}
    generation = (cluster.get("metadata") or {}).get("generation")
    spec = parse_kvcluster(cluster.get("spec")) if spec_error is None else None
    cond = _condition_maker(generation, now)

    tracing_ok = tracing["reason"] == TRACING_CONFIGURED
    desired = spec.replicas if spec is not None else _declared_replicas(cluster)
    ready = int(statefulset["readyReplicas"]) if statefulset else 0
    name, namespace = names.name_of(dict(cluster)), names.namespace_of(dict(cluster))
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": int(statefulset["replicas"]) if statefulset else 0,
        "readyReplicas": ready,
        "readyText": f"{ready}/{desired}",
        "selector": selector_string(dict(cluster), KVNODE),
        "endpoints": {
            "client": names.client_endpoint(dict(cluster)),
            "peers": names.service_dns(names.peers_service(name), namespace),
        },
        "tracing": {
            "pipeline": (tracing.get("pipeline") or "") if tracing_ok else "",
            "sampler": tracing.get("sampler", "") if tracing_ok else "",
        },
    }
    if statefulset and statefulset.get("configChecksum"):
        status["configChecksum"] = statefulset["configChecksum"]
    if spec_error is not None:
        msg = f"invalid spec, nothing applied: {spec_error}"
        status["phase"] = PHASE_FAILED
        conditions = [
            cond("Ready", False, "InvalidSpec", msg),
            cond("Progressing", False, "InvalidSpec", msg),
            cond("Degraded", True, "InvalidSpec", msg),
        ]
    else:
        assert spec is not None
        phase, conditions = _cluster_conditions(
            cond,
            statefulset,
            desired=desired,
            replication_factor=spec.replication_factor,
            was_ready=bool(previous.get("readyReplicas")),
            draining=draining,
        )
        status["phase"] = phase
    conditions.append(cond("TracingConfigured", tracing_ok, tracing["reason"], tracing["message"]))
    status["conditions"] = merge_conditions(previous.get("conditions"), conditions)
    return status


def _declared_replicas(cluster: Mapping[str, Any]) -> int:
    """``spec.replicas`` of a spec the operator rejected: as written when it is an integer,
    else the schema default."""
    value = (cluster.get("spec") or {}).get("replicas")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_kvcluster(None).replicas


def _not_ready_detail(
    sts: Mapping[str, Any] | None, desired: int, ready: int, current: int, draining: Sequence[str]
) -> str:
    """Why a cluster is not Ready, also when every member it has is ready (not "3/3 members
    ready" alone): the StatefulSet is missing, members drain, it scales or rolls a new template."""
    if sts is None:
        return f"0/{desired} members ready: the StatefulSet is not created yet"
    counts = f"{ready}/{desired} members ready"
    if draining:
        return f"{counts}, {', '.join(draining)} draining before the scale-down"
    if ready < desired:
        return counts
    if current != desired or int(sts["desired"]) != desired:
        return f"{counts}, but the StatefulSet has {current} of {desired} (scaling)"
    updated = int(sts.get("updatedReplicas") or 0)
    if updated < desired:
        return (
            f"{counts}, but only {updated}/{desired} run the current pod template (rolling update)"
        )
    return f"{counts}, but the StatefulSet has not finished rolling out the current pod template"


def _cluster_conditions(
    cond: Callable[..., dict[str, Any]],
    sts: Mapping[str, Any] | None,
    *,
    desired: int,
    replication_factor: int,
    was_ready: bool,
    draining: Sequence[str] = (),
) -> tuple[str, list[dict[str, Any]]]:
    """Phase, and the Ready, Progressing and Degraded conditions of a valid KVCluster."""
    ready = int(sts["readyReplicas"]) if sts else 0
    current = int(sts["replicas"]) if sts else 0
    need = quorum(replication_factor)
    counts = f"{ready}/{desired} members ready"
    quorum_note = (
        f"quorum {'available' if ready >= need else 'not available'} "
        f"({need} of replication factor {replication_factor})"
    )
    progressing: tuple[str, str] | None = None
    if sts is None:
        phase, progressing = PHASE_PENDING, ("Creating", "creating the StatefulSet")
    elif draining:
        phase = PHASE_PROGRESSING
        progressing = (
            "Draining",
            f"scaling down to {desired} members: {', '.join(draining)} left the "
            "peers file and hand their data over before they are removed",
        )
    elif sts["desired"] != desired or current != desired:
        phase = PHASE_PROGRESSING
        progressing = ("Scaling", f"scaling from {current} to {desired} members ({counts})")
    elif not sts["rolledOut"]:
        phase = PHASE_PROGRESSING
        progressing = ("RollingUpdate", f"rolling the members one at a time ({counts})")
    elif ready >= desired:
        phase = PHASE_RUNNING
    elif not was_ready:
        phase = PHASE_PENDING
        progressing = ("Starting", f"waiting for the members to become ready ({counts})")
    else:
        phase = PHASE_DEGRADED

    is_ready = sts is not None and bool(sts["ready"]) and current == desired and ready >= desired
    ready_cond = (
        cond("Ready", True, "AllMembersReady", counts)
        if is_ready
        else cond(
            "Ready",
            False,
            "MembersNotReady",
            f"{_not_ready_detail(sts, desired, ready, current, draining)}; {quorum_note}",
        )
    )
    prog_cond = (
        cond("Progressing", True, *progressing)
        if progressing
        else cond("Progressing", False, "Stable", f"all {desired} members rolled out")
    )
    if phase == PHASE_DEGRADED:
        deg = cond(
            "Degraded",
            True,
            "MembersUnavailable" if ready >= need else "QuorumLost",
            f"{counts}; {quorum_note}",
        )
    else:
        deg = cond("Degraded", False, "AsExpected", counts)
    return phase, [ready_cond, prog_cond, deg]


# --------------------------------------------------------------------------- TracingPipeline


def sampling_status(spec: PipelineSpec) -> dict[str, Any]:
    """The sampling actually rendered, with a note on what the mode implies (head mode:
    errors are sampled like everything else)."""
    ratio = sampling.format_ratio(sampling.effective_ratio(spec))
    mode = spec.sampling.mode
    if mode == sampling.HEAD:
        note = f"{sampling.HEAD_NOTE} (ratio {ratio}): not every error is kept"
    elif mode == sampling.DEVELOPMENT:
        note = "development: every span is kept and also written to the debug exporter"
    elif mode == sampling.RETROACTIVE:
        note = (
            f"{sampling.RETROACTIVE_NOTE} (threshold {spec.sampling.latency_threshold}, "
            f"ratio {ratio})"
        )
    else:
        errors = "every trace with an error, " if sampling.keeps_errors(spec) else ""
        note = (
            f"production tail sampling: {errors}every trace slower than "
            f"{spec.sampling.latency_threshold}, and a ratio {ratio} of the rest"
        )
    return {
        "sdkSampler": dict(sampling.sdk_sampler(spec))["OTEL_TRACES_SAMPLER"],
        "tailSampling": sampling.uses_tail_sampling(spec),
        "note": note,
    }


def consumer_refs(referencing: Iterable[tuple[str, str]], namespace: str) -> list[dict[str, str]]:
    """``status.consumers``: each object referencing the pipeline as ``{kind, namespace,
    name}``, sorted: a KVCluster (``(KVCluster, NAME)``, in the pipeline's namespace) or a
    workload the injection webhook configured (``(Workload, NAMESPACE/KIND/NAME)``, its own
    kind and namespace)."""
    refs = set()
    for kind, name in referencing:
        if kind == WORKLOAD:
            where, _, workload = name.partition("/")
            workload_kind, _, workload_name = workload.partition("/")
            refs.add((workload_kind, where, workload_name))
        else:
            refs.add((kind, namespace, name))
    return [{"kind": k, "namespace": ns, "name": n} for k, ns, n in sorted(refs)]


def pipeline_status(
    pipeline: Mapping[str, Any],
    *,
    workloads: Sequence[Mapping[str, Any]],
    consumers: Iterable[tuple[str, str]],
    now: str,
    spec_error: str | None = None,
    trace_delivery: tuple[str, str, str] | None = None,
    delivery: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The full ``status`` of a TracingPipeline.

    ``workloads``: workload_summary() of every Deployment observed (collector tiers and
    Jaeger); ``consumers``: (kind, name) of the objects referencing the pipeline
    (consumer_refs());
    ``trace_delivery``: (status, reason, message) of the TraceDelivery condition from
    render.canary.decide() and ``delivery`` the ``status.traceDelivery`` record (both kept
    as the status shows them when ``trace_delivery`` is None). Ready never depends on
    TraceDelivery (see render/canary.py)."""
    previous = pipeline.get("status") or {}
    generation = (pipeline.get("metadata") or {}).get("generation")
    cond = _condition_maker(generation, now)

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "consumers": consumer_refs(
            consumers, str((pipeline.get("metadata") or {}).get("namespace"))
        ),
    }
    extra = [cond(canary.CONDITION, *trace_delivery)] if trace_delivery else []
    if trace_delivery is None:  # unchanged: what the status shows
        extra = [c for c in [find_condition(previous, canary.CONDITION)] if c]
        delivery = previous.get("traceDelivery")
    if delivery:
        status["traceDelivery"] = dict(delivery)
    if spec_error is not None:
        msg = f"invalid spec, nothing applied: {spec_error}"
        conditions = [
            cond("Ready", False, "InvalidSpec", msg),
            cond("ConfigValid", False, "InvalidSpec", spec_error),
            cond("CollectorReady", "Unknown", "InvalidSpec", msg),
            cond("JaegerReady", "Unknown", "InvalidSpec", msg),
            *extra,
        ]
        status["phase"] = PHASE_FAILED
        status["conditions"] = merge_conditions(previous.get("conditions"), conditions)
        return status

    spec = parse_pipeline(pipeline.get("spec"))
    jaeger_enabled = spec.jaeger.enabled
    # By component label: the pipeline's other Deployments (its Prometheus) are neither.
    collectors = [w for w in workloads if _component_is(w, COLLECTOR_COMPONENTS)]
    jaegers = [w for w in workloads if _component_is(w, frozenset({JAEGER}))]
    status["collector"] = {**_counts(collectors), "tiers": 2 if sampling.two_tier(spec) else 1}
    status["jaeger"] = _counts(jaegers)
    coll_ok, coll_reason, coll_msg = _tier_state("collector", collectors)
    if jaeger_enabled:
        jg_ok, jg_reason, jg_msg = _tier_state("Jaeger", jaegers)
    else:
        jg_ok, jg_reason, jg_msg = False, "Disabled", "spec.jaeger.enabled is false"
    ready = coll_ok and (jg_ok or not jaeger_enabled)
    status["sampling"] = sampling_status(spec)
    why = "; ".join(
        m for ok, m in ((coll_ok, coll_msg), (jg_ok or not jaeger_enabled, jg_msg)) if not ok
    )
    conditions = [
        cond(
            "Ready",
            ready,
            "PipelineReady" if ready else "ComponentsNotReady",
            status["sampling"]["note"] if ready else why,
        ),
        cond("ConfigValid", True, "Valid", "the spec is valid and rendered"),
        cond("CollectorReady", coll_ok, coll_reason, coll_msg),
        cond("JaegerReady", jg_ok, jg_reason, jg_msg),
        *extra,
    ]
    relevant = collectors + (jaegers if jaeger_enabled else [])
    if ready:
        status["phase"] = PHASE_RUNNING
    elif (
        any(not w["rolledOut"] for w in relevant) or len(collectors) < status["collector"]["tiers"]
    ):
        status["phase"] = PHASE_PROGRESSING
    elif previous.get("phase") in (PHASE_RUNNING, PHASE_DEGRADED):
        status["phase"] = PHASE_DEGRADED
    else:
        status["phase"] = PHASE_PENDING
    status["endpoints"] = names.pipeline_endpoints(dict(pipeline))
    sums = sorted(w["configChecksum"] for w in collectors if w.get("configChecksum"))
    if sums:
        status["configChecksum"] = sums[0] if len(sums) == 1 else checksum(sums)
    status["conditions"] = merge_conditions(previous.get("conditions"), conditions)
    return status


def _counts(workloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Desired and ready pods of some Deployments, and the "ready/desired" text."""
    desired = sum(int(w["desired"]) for w in workloads)
    ready = sum(int(w["readyReplicas"]) for w in workloads)
    return {"replicas": desired, "readyReplicas": ready, "ready": f"{ready}/{desired}"}


def _tier_state(what: str, workloads: Sequence[Mapping[str, Any]]) -> tuple[bool, str, str]:
    if not workloads:
        return False, "NotCreated", f"the {what} Deployment does not exist yet"
    parts = ", ".join(f"{w['name']} {w['readyReplicas']}/{w['desired']} ready" for w in workloads)
    if all(w["ready"] for w in workloads):
        return True, "AllReplicasReady", parts
    reason = "RollingUpdate" if any(not w["rolledOut"] for w in workloads) else "ReplicasNotReady"
    return False, reason, parts
