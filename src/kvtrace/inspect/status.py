"""``kvtrace status``: KVClusters and TracingPipelines, their conditions, members, sampling,
endpoints and recent events.

:func:`build_report` is pure: it takes the objects as the API server returned them (plain
dicts) and the current time, and returns the report as plain data (what ``-o json|yaml``
prints); :func:`render_table` draws that report for humans. :func:`gather` is the I/O edge
(read-only API calls through :class:`kvtrace.inspect.kube.Kube`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from kvtrace.inspect import injection
from kvtrace.inspect.errors import InspectError
from kvtrace_operator.render import names, resources, sampling
from kvtrace_operator.render.jaeger import retention
from kvtrace_operator.spec import SpecError, parse_kvcluster, parse_pipeline

INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
NAME_LABEL = "app.kubernetes.io/name"
KVNODE = "kvnode"
EVENTS_PER_OBJECT = 5
FORMATS = ("table", "json", "yaml")

# --------------------------------------------------------------------------- time


def parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not value or not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: Any, now: dt.datetime) -> str:
    """``kubectl``-style age: 45s, 12m, 3h, 2d (``?`` when unknown)."""
    moment = parse_time(value)
    if moment is None:
        return "?"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# --------------------------------------------------------------------------- pieces


def conditions_of(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            key: cond.get(key)
            for key in ("type", "status", "reason", "message", "lastTransitionTime")
        }
        for cond in ((obj.get("status") or {}).get("conditions") or [])
    ]


def _event_time(event: Mapping[str, Any]) -> dt.datetime:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        moment = parse_time(event.get(key))
        if moment:
            return moment
    return parse_time(
        (event.get("metadata") or {}).get("creationTimestamp")
    ) or dt.datetime.min.replace(tzinfo=dt.UTC)


def events_for(
    events: Iterable[Mapping[str, Any]],
    kind: str,
    name: str,
    now: dt.datetime,
    limit: int = EVENTS_PER_OBJECT,
) -> list[dict[str, Any]]:
    """The ``limit`` most recent events about ``kind/name``, oldest first."""
    mine = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("kind") == kind
        and (e.get("involvedObject") or {}).get("name") == name
    ]
    mine.sort(key=_event_time)
    return [
        {
            "type": e.get("type", ""),
            "reason": e.get("reason", ""),
            "message": e.get("message", ""),
            "count": int(e.get("count") or 1),
            "age": age(_event_time(e), now),
        }
        for e in mine[-limit:]
    ]


def member_view(pod: Mapping[str, Any]) -> dict[str, Any]:
    """One KV member from its pod: ready or not, and why not."""
    meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    ready_cond = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
    ready = bool(ready_cond and ready_cond.get("status") == "True")
    restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
    reason = ""
    if meta.get("deletionTimestamp"):
        reason = "Terminating"
    elif not ready:
        for cs in st.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                reason = waiting["reason"]
                break
        failing = [
            c.get("reason")
            for c in st.get("conditions") or []
            if c.get("status") == "False" and c.get("reason")
        ]
        reason = (
            reason
            or (failing[0] if failing else "")
            or st.get("reason")
            or st.get("phase")
            or "Unknown"
        )
    return {
        "name": meta.get("name", ""),
        "ready": ready,
        "phase": st.get("phase", "Unknown"),
        "node": spec.get("nodeName") or "",
        "ip": st.get("podIP") or "",
        "restarts": restarts,
        "reason": reason,
    }


def desired_replicas(cluster: Mapping[str, Any]) -> int:
    """``spec.replicas`` of a KVCluster (defaults applied); 0 for a spec the API server would
    have refused."""
    try:
        return parse_kvcluster(cluster.get("spec")).replicas
    except SpecError:
        return 0


def members(cluster: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every desired member (``NAME-0..N-1``, missing pods included) and any extra pod."""
    name = names.name_of(dict(cluster))
    desired = desired_replicas(cluster)
    by_name = {p["metadata"]["name"]: p for p in pods if is_member(p, name)}
    result = []
    for ordinal in range(desired):
        pod_name = f"{name}-{ordinal}"
        pod = by_name.pop(pod_name, None)
        result.append(
            member_view(pod)
            if pod
            else {
                "name": pod_name,
                "ready": False,
                "phase": "Missing",
                "node": "",
                "ip": "",
                "restarts": 0,
                "reason": "NoPod",
            }
        )
    for pod_name in sorted(by_name, key=_ordinal):  # leaving members (scale-down, draining)
        result.append({**member_view(by_name[pod_name]), "extra": True})
    return result


def _ordinal(pod_name: str) -> tuple[int, str]:
    tail = pod_name.rsplit("-", 1)[-1]
    return (int(tail), pod_name) if tail.isdigit() else (10**9, pod_name)


def is_member(pod: Mapping[str, Any], cluster_name: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (
        labels.get(INSTANCE) == cluster_name
        and labels.get(COMPONENT) == KVNODE
        and labels.get(NAME_LABEL, "kvcluster") == "kvcluster"
    )


def sampling_view(pipeline: Mapping[str, Any] | None) -> dict[str, Any]:
    """Mode and ratio of a pipeline (defaults applied), as rendered for its applications."""
    empty: dict[str, Any] = {"mode": "", "ratio": None, "tailSampling": False, "sdkSampler": ""}
    if pipeline is None:
        return empty
    try:
        spec = parse_pipeline(pipeline.get("spec"))
    except SpecError:  # a spec the API server would have refused
        return empty
    view: dict[str, Any] = {
        "mode": spec.sampling.mode,
        "ratio": sampling.effective_ratio(spec),
        "tailSampling": sampling.uses_tail_sampling(spec),
        "sdkSampler": dict(sampling.sdk_sampler(spec)).get("OTEL_TRACES_SAMPLER", ""),
    }
    note = ((pipeline.get("status") or {}).get("sampling") or {}).get("note")
    if note:
        view["note"] = note
    return view


def storage_view(pipeline: Mapping[str, Any]) -> dict[str, Any] | None:
    """What Jaeger's trace store and archive store keep (render/jaeger.py ``retention``;
    defaults applied); None when the pipeline runs no Jaeger."""
    try:
        spec = parse_pipeline(pipeline.get("spec"))
    except SpecError:  # a spec the API server would have refused
        return None
    return retention(spec.jaeger) if spec.jaeger.enabled else None


def _store_text(store: Mapping[str, Any] | None) -> str:
    if store is None:
        return "off"
    if store["type"] == "badger":
        return f"badger, spans kept {store['retention']}"
    return f"memory, the newest {store['maxTraces']} traces (lost on restart)"


def pipeline_ref(cluster: Mapping[str, Any]) -> str:
    """The name of the TracingPipeline a KVCluster references ("" when none)."""
    return resources.pipeline_ref(dict(cluster)) or ""


# --------------------------------------------------------------------------- views


def cluster_view(
    cluster: Mapping[str, Any],
    *,
    pods: Iterable[Mapping[str, Any]],
    pipeline: Mapping[str, Any] | None,
    events: Iterable[Mapping[str, Any]],
    now: dt.datetime,
) -> dict[str, Any]:
    meta, st = cluster.get("metadata") or {}, cluster.get("status") or {}
    member_list = members(cluster, pods)
    desired = desired_replicas(cluster)
    ready = sum(1 for m in member_list if m["ready"] and not m.get("extra"))
    ref = pipeline_ref(cluster)
    tracing = st.get("tracing") or {}
    traced = next((c for c in conditions_of(cluster) if c["type"] == "TracingConfigured"), None)
    return {
        "kind": "KVCluster",
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "phase": st.get("phase") or "Unknown",
        "ready": f"{ready}/{desired}",
        "desired": desired,
        "readyMembers": ready,
        "observedGeneration": st.get("observedGeneration"),
        "generation": meta.get("generation"),
        "members": member_list,
        "pipeline": ref,
        "pipelineFound": pipeline is not None,
        "tracing": {
            "configured": bool(traced and traced["status"] == "True"),
            "reason": (traced or {}).get("reason") or "",
            "sampler": tracing.get("sampler", ""),
        },
        "sampling": sampling_view(pipeline),
        "endpoints": dict(st.get("endpoints") or {"client": names.client_endpoint(dict(cluster))}),
        "conditions": conditions_of(cluster),
        "events": events_for(events, "KVCluster", meta.get("name", ""), now),
        "age": age(meta.get("creationTimestamp"), now),
    }


def cluster_consumers(consumers: Iterable[Any] | None) -> list[str]:
    """The KVClusters among a pipeline's ``status.consumers`` (typed ``{kind, namespace,
    name}`` entries; an older operator wrote the clusters' names): its workloads are listed
    as ``instrumentedWorkloads``."""
    return [
        entry if isinstance(entry, str) else str(entry.get("name", ""))
        for entry in consumers or ()
        if isinstance(entry, str) or entry.get("kind") == "KVCluster"
    ]


def pipeline_view(
    pipeline: Mapping[str, Any], *, events: Iterable[Mapping[str, Any]], now: dt.datetime
) -> dict[str, Any]:
    meta, st = pipeline.get("metadata") or {}, pipeline.get("status") or {}
    endpoints = dict(st.get("endpoints") or names.pipeline_endpoints(dict(pipeline)))
    return {
        "kind": "TracingPipeline",
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "phase": st.get("phase") or "Unknown",
        "collector": (st.get("collector") or {}).get("ready", "?"),
        "collectorTiers": (st.get("collector") or {}).get("tiers", 1),
        "jaeger": (st.get("jaeger") or {}).get("ready", "?"),
        "sampling": sampling_view(pipeline),
        "storage": storage_view(pipeline),
        "endpoints": endpoints,
        "consumers": cluster_consumers(st.get("consumers")),
        "instrumentedWorkloads": list(st.get("instrumentedWorkloads") or []),
        "traceDelivery": dict(st.get("traceDelivery") or {}),
        "conditions": conditions_of(pipeline),
        "events": events_for(events, "TracingPipeline", meta.get("name", ""), now),
        "age": age(meta.get("creationTimestamp"), now),
    }


def build_report(
    *,
    clusters: Sequence[Mapping[str, Any]],
    pipelines: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    now: dt.datetime,
    namespace: str | None = None,
    injected: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The whole report (``-o json``): one entry per KVCluster and per TracingPipeline, and
    ``injection``: the workloads asking for it (inspect/injection.py)."""

    def key(obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace", "")), str(meta.get("name", ""))

    by_key = {key(p): p for p in pipelines}
    pods_by_ns: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        pods_by_ns.setdefault(str((pod.get("metadata") or {}).get("namespace", "")), []).append(pod)
    events_by_ns: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        events_by_ns.setdefault(str((event.get("metadata") or {}).get("namespace", "")), []).append(
            event
        )

    cluster_views = []
    for cluster in sorted(clusters, key=key):
        ns, _ = key(cluster)
        cluster_views.append(
            cluster_view(
                cluster,
                pods=pods_by_ns.get(ns, []),
                pipeline=by_key.get((ns, pipeline_ref(cluster))),
                events=events_by_ns.get(ns, []),
                now=now,
            )
        )
    pipeline_views = [
        pipeline_view(p, events=events_by_ns.get(key(p)[0], []), now=now)
        for p in sorted(pipelines, key=key)
    ]
    return {
        "namespace": namespace,
        "kvclusters": cluster_views,
        "tracingpipelines": pipeline_views,
        "injection": [dict(view) for view in injected],
    }


def select(report: dict[str, Any], name: str) -> dict[str, Any]:
    """The report narrowed to the KVCluster ``name`` (and its pipeline) or the TracingPipeline
    ``name``; InspectError when neither exists."""
    clusters = [c for c in report["kvclusters"] if c["name"] == name]
    pipelines = [p for p in report["tracingpipelines"] if p["name"] == name]
    for cluster in clusters:
        pipelines += [
            p
            for p in report["tracingpipelines"]
            if p["name"] == cluster["pipeline"]
            and p["namespace"] == cluster["namespace"]
            and p not in pipelines
        ]
    if not clusters and not pipelines:
        where = f" in namespace {report['namespace']}" if report.get("namespace") else ""
        raise InspectError(f"NAME: no KVCluster or TracingPipeline named {name!r}{where}")
    return {**report, "kvclusters": clusters, "tracingpipelines": pipelines}


def healthy(report: Mapping[str, Any]) -> bool:
    """Every resource in the report is Ready=True."""
    items = [*report["kvclusters"], *report["tracingpipelines"]]
    return all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in item["conditions"])
        for item in items
    )


# --------------------------------------------------------------------------- rendering


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Left-aligned columns separated by two spaces (the first row is the header)."""
    if not rows:
        return []
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in rows
    ]


def _sampling_text(view: Mapping[str, Any]) -> str:
    if not view.get("mode"):
        return "-"
    ratio = view.get("ratio")
    return (
        f"{view['mode']} {sampling.format_ratio(ratio)}"
        if isinstance(ratio, float)
        else str(view["mode"])
    )


def _conditions_lines(conditions: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [("CONDITION", "STATUS", "REASON", "MESSAGE")]
    rows += [
        (
            str(c.get("type")),
            str(c.get("status")),
            str(c.get("reason") or ""),
            str(c.get("message") or ""),
        )
        for c in conditions
    ]
    return (
        table(rows, "  ") if conditions else ["  conditions: none yet (is the operator running?)"]
    )


def _events_lines(events: Sequence[Mapping[str, Any]]) -> list[str]:
    if not events:
        return ["  events: none"]
    rows = [("AGE", "TYPE", "REASON", "MESSAGE")]
    rows += [
        (
            e["age"],
            e["type"],
            e["reason"] + (f" (x{e['count']})" if e["count"] > 1 else ""),
            e["message"],
        )
        for e in events
    ]
    return table(rows, "  ")


def render_cluster(view: Mapping[str, Any]) -> list[str]:
    pipeline = view["pipeline"] or "-"
    if view["pipeline"] and not view["pipelineFound"]:
        pipeline += " (not found)"
    lines = [
        f"KVCluster {view['namespace']}/{view['name']}: {view['phase']}, {view['ready']} members ready"
        f", pipeline {pipeline}, sampling {_sampling_text(view['sampling'])}"
    ]
    lines.append(f"  client: {view['endpoints'].get('client', '-')}")
    if view["tracing"]["sampler"]:
        lines.append(f"  members' sampler: {view['tracing']['sampler']}")
    rows = [("MEMBER", "READY", "STATUS", "RESTARTS", "NODE", "IP")]
    for m in view["members"]:
        status = m["phase"] if m["ready"] else (m["reason"] or m["phase"])
        rows.append(
            (
                m["name"] + (" (leaving)" if m.get("extra") else ""),
                "yes" if m["ready"] else "NO",
                status,
                str(m["restarts"]),
                m["node"] or "-",
                m["ip"] or "-",
            )
        )
    lines += table(rows, "  ") if view["members"] else ["  members: none"]
    lines += _conditions_lines(view["conditions"])
    lines += _events_lines(view["events"])
    return lines


def render_pipeline(view: Mapping[str, Any]) -> list[str]:
    tiers = (
        f" ({view['collectorTiers']} tiers)"
        if view["collectorTiers"] and view["collectorTiers"] > 1
        else ""
    )
    lines = [
        f"TracingPipeline {view['namespace']}/{view['name']}: {view['phase']}, collector "
        f"{view['collector']}{tiers}, jaeger {view['jaeger']}, sampling {_sampling_text(view['sampling'])}"
    ]
    if view["sampling"].get("note"):
        lines.append(f"  sampling: {view['sampling']['note']}")
    if view.get("storage"):
        lines.append(f"  trace storage: {_store_text(view['storage']['traces'])}")
        lines.append(f"  archive storage: {_store_text(view['storage']['archive'])}")
    for label, key in (
        ("collector OTLP/HTTP", "otlpHttp"),
        ("collector OTLP/gRPC", "otlpGrpc"),
        ("Jaeger query", "jaegerQuery"),
    ):
        if view["endpoints"].get(key):
            lines.append(f"  {label}: {view['endpoints'][key]}")
    lines.append(f"  used by: {', '.join(view['consumers']) or '-'}")
    if view.get("instrumentedWorkloads"):
        lines.append(f"  instrumented workloads: {', '.join(view['instrumentedWorkloads'])}")
    delivery = view.get("traceDelivery") or {}
    if delivery:
        latency = f" after {delivery['latencySeconds']}s" if delivery.get("latencySeconds") else ""
        lines.append(
            f"  trace delivery: last canary {delivery.get('lastProbeTime', '-')} "
            f"(trace {delivery.get('traceID', '-')}), last delivered "
            f"{delivery.get('lastSuccessTime', 'never')}{latency}"
        )
    lines += _conditions_lines(view["conditions"])
    lines += _events_lines(view["events"])
    return lines


def render_table(report: Mapping[str, Any]) -> str:
    """The human-readable report: a summary table, then one section per resource."""
    clusters, pipelines = report["kvclusters"], report["tracingpipelines"]
    injected = injection.render_lines(report.get("injection") or [])
    if not clusters and not pipelines:
        where = f" in namespace {report['namespace']}" if report.get("namespace") else ""
        return "\n".join([f"No KVClusters or TracingPipelines{where}.", *injected]) + "\n"
    rows = [("KIND", "NAME", "PHASE", "READY", "PIPELINE", "SAMPLING", "AGE")]
    for c in clusters:
        rows.append(
            (
                "KVCluster",
                _qualified(c, report),
                c["phase"],
                c["ready"],
                c["pipeline"] or "-",
                _sampling_text(c["sampling"]),
                c["age"],
            )
        )
    for p in pipelines:
        rows.append(
            (
                "TracingPipeline",
                _qualified(p, report),
                p["phase"],
                f"collector {p['collector']}, jaeger {p['jaeger']}",
                "-",
                _sampling_text(p["sampling"]),
                p["age"],
            )
        )
    lines = table(rows)
    for view in clusters:
        lines += ["", *render_cluster(view)]
    for view in pipelines:
        lines += ["", *render_pipeline(view)]
    if injected:
        lines += ["", *injected]
    return "\n".join(lines) + "\n"


def _qualified(view: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    return view["name"] if report.get("namespace") else f"{view['namespace']}/{view['name']}"


def render(report: Mapping[str, Any], output: str) -> str:
    if output == "json":
        return json.dumps(report, indent=2) + "\n"
    if output == "yaml":
        return str(yaml.safe_dump(report, sort_keys=False))
    if output == "table":
        return render_table(report)
    raise InspectError(f"-o/--output: expected one of {', '.join(FORMATS)}, got {output!r}")


# --------------------------------------------------------------------------- I/O edge


def gather(kube: Any, namespace: str | None, now: dt.datetime | None = None) -> dict[str, Any]:
    """Read everything the report needs (read-only calls) and build it."""
    clusters = kube.list("KVCluster", namespace)
    pipelines = kube.list("TracingPipeline", namespace)
    pods = kube.list("Pod", namespace, {COMPONENT: KVNODE}) if clusters else []
    events = kube.list("Event", namespace) if clusters or pipelines else []
    return build_report(
        clusters=clusters,
        pipelines=pipelines,
        pods=pods,
        events=events,
        now=now or dt.datetime.now(dt.UTC),
        namespace=namespace,
        injected=injection.gather(kube, namespace),
    )
