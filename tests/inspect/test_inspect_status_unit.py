"""`kvtrace status`: the report and its table from fetched objects (pure functions)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import yaml

from kvtrace.inspect import status
from kvtrace.inspect.errors import InspectError

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 27, 6, 0, 0, tzinfo=dt.UTC)
NS = "store"


def cond(type_: str, value: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-27T05:50:00Z",
    }


def kvcluster(
    name: str = "kv",
    replicas: int = 3,
    pipeline: str | None = "traces",
    ready: int = 3,
    phase: str = "Running",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": replicas}
    if pipeline:
        spec["tracing"] = {"pipelineRef": {"name": pipeline}}
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {
            "name": name,
            "namespace": NS,
            "generation": 1,
            "creationTimestamp": "2026-11-27T05:00:00Z",
        },
        "spec": spec,
        "status": {
            "phase": phase,
            "readyReplicas": ready,
            "observedGeneration": 1,
            "endpoints": {"client": f"http://{name}.{NS}.svc.cluster.local:7070"},
            "tracing": {
                "pipeline": pipeline or "",
                "sampler": "parentbased_always_on" if pipeline else "",
            },
            "conditions": [
                cond(
                    "Ready",
                    "True" if ready == replicas else "False",
                    "AllMembersReady" if ready == replicas else "MembersNotReady",
                    f"{ready}/{replicas} members ready",
                ),
                cond(
                    "TracingConfigured",
                    "True" if pipeline else "False",
                    "PipelineConfigured" if pipeline else "TracingDisabled",
                ),
            ],
        },
    }


def pipeline(name: str = "traces", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {
            "name": name,
            "namespace": NS,
            "generation": 1,
            "creationTimestamp": "2026-11-27T04:00:00Z",
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "collector": {"ready": "1/1", "tiers": 1},
            "jaeger": {"ready": "1/1"},
            "consumers": [
                {"kind": "KVCluster", "namespace": NS, "name": "kv"},
                {"kind": "Deployment", "namespace": "apps", "name": "web"},
            ],
            "endpoints": {
                "otlpHttp": f"http://{name}-collector.{NS}.svc.cluster.local:4318",
                "otlpGrpc": f"http://{name}-collector.{NS}.svc.cluster.local:4317",
                "jaegerQuery": f"http://{name}-jaeger-query.{NS}.svc.cluster.local:16686",
            },
            "conditions": [cond("Ready", "True", "PipelineReady")],
        },
    }


def pod(
    name: str,
    cluster: str = "kv",
    ready: bool = True,
    waiting: str | None = None,
    restarts: int = 0,
) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/name": "kvcluster",
                "app.kubernetes.io/instance": cluster,
                "app.kubernetes.io/component": "kvnode",
            },
        },
        "spec": {"nodeName": "kwok-node-0"},
        "status": {
            "phase": "Running",
            "podIP": "10.244.0.7",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    **({} if ready else {"reason": "ContainersNotReady"}),
                }
            ],
            "containerStatuses": [{"name": "kvnode", "restartCount": restarts, "state": state}],
        },
    }


def event(
    kind: str, name: str, reason: str, when: str, type_: str = "Normal", count: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "name": f"{name}.{reason}"},
        "involvedObject": {"kind": kind, "name": name},
        "reason": reason,
        "message": f"{reason} happened",
        "type": type_,
        "count": count,
        "lastTimestamp": when,
    }


def report(**kw: Any) -> dict[str, Any]:
    kw.setdefault("clusters", [kvcluster()])
    kw.setdefault("pipelines", [pipeline()])
    kw.setdefault("pods", [pod("kv-0"), pod("kv-1"), pod("kv-2")])
    kw.setdefault("events", [])
    return status.build_report(now=NOW, namespace=NS, **kw)


def test_healthy_cluster_report_has_members_pipeline_sampling_and_endpoints() -> None:
    rep = report()
    (cluster,) = rep["kvclusters"]
    assert cluster["ready"] == "3/3" and cluster["phase"] == "Running"
    assert [m["name"] for m in cluster["members"]] == ["kv-0", "kv-1", "kv-2"]
    assert all(m["ready"] and m["node"] == "kwok-node-0" for m in cluster["members"])
    assert cluster["pipeline"] == "traces" and cluster["pipelineFound"]
    assert cluster["sampling"] == {
        "mode": "production",
        "ratio": 0.1,
        "tailSampling": True,
        "sdkSampler": "parentbased_always_on",
    }
    assert cluster["tracing"] == {
        "configured": True,
        "reason": "PipelineConfigured",
        "sampler": "parentbased_always_on",
    }
    (tp,) = rep["tracingpipelines"]
    assert tp["collector"] == "1/1" and tp["jaeger"] == "1/1" and tp["consumers"] == ["kv"]
    assert tp["endpoints"]["jaegerQuery"].endswith(":16686")
    assert status.healthy(rep)
    text = status.render_table(rep)
    assert (
        "KVCluster store/kv: Running, 3/3 members ready, pipeline traces, sampling production 0.1"
        in text
    )
    assert "collector OTLP/HTTP: http://traces-collector.store.svc.cluster.local:4318" in text
    assert "Jaeger query: http://traces-jaeger-query.store.svc.cluster.local:16686" in text


@pytest.mark.parametrize(
    ("jaeger", "storage", "lines"),
    [
        (
            {},
            {"traces": {"type": "memory", "maxTraces": 100000}, "archive": None},
            [
                "  trace storage: memory, the newest 100000 traces (lost on restart)",
                "  archive storage: off",
            ],
        ),
        (
            {"storage": {"type": "badger", "retention": "48h"}, "archive": {"enabled": True}},
            {
                "traces": {"type": "badger", "retention": "48h"},
                "archive": {"type": "badger", "retention": "720h"},
            },
            [
                "  trace storage: badger, spans kept 48h",
                "  archive storage: badger, spans kept 720h",
            ],
        ),
        (
            {"archive": {"enabled": True, "maxTraces": 500}},
            {
                "traces": {"type": "memory", "maxTraces": 100000},
                "archive": {"type": "memory", "maxTraces": 500},
            },
            ["  archive storage: memory, the newest 500 traces (lost on restart)"],
        ),
        ({"enabled": False}, None, []),
    ],
)
def test_pipeline_shows_the_retention_of_its_trace_and_archive_stores(
    jaeger: dict[str, Any], storage: dict[str, Any] | None, lines: list[str]
) -> None:
    rep = report(pipelines=[pipeline(jaeger=jaeger)])
    assert rep["tracingpipelines"][0]["storage"] == storage
    text = status.render_table(rep).splitlines()
    for line in lines:
        assert line in text, text
    if storage is None:
        assert not [line for line in text if "storage:" in line], text


def test_degraded_cluster_shows_which_member_is_not_ready_and_why() -> None:
    rep = report(
        clusters=[kvcluster(ready=1, phase="Degraded")],
        pods=[pod("kv-0"), pod("kv-1", ready=False, waiting="CrashLoopBackOff", restarts=4)],
    )
    (cluster,) = rep["kvclusters"]
    assert cluster["ready"] == "1/3"
    by_name = {m["name"]: m for m in cluster["members"]}
    assert by_name["kv-1"]["ready"] is False and by_name["kv-1"]["reason"] == "CrashLoopBackOff"
    assert by_name["kv-1"]["restarts"] == 4
    assert by_name["kv-2"]["phase"] == "Missing" and by_name["kv-2"]["reason"] == "NoPod"
    assert not status.healthy(rep)
    text = status.render_table(rep)
    assert "Degraded, 1/3 members ready" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("kv-1"))
    assert "NO" in row and "CrashLoopBackOff" in row and " 4 " in row
    assert "MembersNotReady" in text


def test_pods_of_other_clusters_are_not_members_and_leaving_members_are_marked() -> None:
    rep = report(
        clusters=[kvcluster(replicas=2)],
        pods=[pod("kv-0"), pod("kv-1"), pod("kv-2"), pod("other-0", cluster="other")],
    )
    names = [(m["name"], bool(m.get("extra"))) for m in rep["kvclusters"][0]["members"]]
    assert names == [("kv-0", False), ("kv-1", False), ("kv-2", True)]
    assert rep["kvclusters"][0]["ready"] == "2/2"
    assert "kv-2 (leaving)" in status.render_table(rep)


def test_missing_pipeline_and_untraced_cluster() -> None:
    rep = report(
        clusters=[kvcluster(pipeline="gone"), kvcluster(name="plain", pipeline=None)], pipelines=[]
    )
    gone, plain = sorted(rep["kvclusters"], key=lambda c: c["name"])
    assert (
        gone["pipeline"] == "gone" and not gone["pipelineFound"] and gone["sampling"]["mode"] == ""
    )
    assert plain["pipeline"] == "" and plain["tracing"]["reason"] == "TracingDisabled"
    text = status.render_table(rep)
    assert "pipeline gone (not found), sampling -" in text
    assert "pipeline -, sampling -" in text


def test_head_and_development_sampling_are_reported() -> None:
    rep = report(pipelines=[pipeline(sampling={"mode": "head", "ratio": 0.25})])
    assert rep["kvclusters"][0]["sampling"]["mode"] == "head"
    assert rep["kvclusters"][0]["sampling"]["ratio"] == 0.25
    assert rep["kvclusters"][0]["sampling"]["sdkSampler"] == "parentbased_traceidratio"
    rep = report(pipelines=[pipeline(sampling={"mode": "development"})])
    assert rep["tracingpipelines"][0]["sampling"]["ratio"] == 1.0


def test_recent_events_are_per_object_newest_last_and_limited() -> None:
    events = [event("KVCluster", "kv", f"R{i}", f"2026-11-27T05:{i:02d}:00Z") for i in range(8)]
    events.append(event("KVCluster", "other", "Elsewhere", "2026-11-27T05:59:00Z"))
    events.append(
        event("TracingPipeline", "traces", "NotReady", "2026-11-27T05:59:30Z", "Warning", count=3)
    )
    rep = report(events=events)
    assert [e["reason"] for e in rep["kvclusters"][0]["events"]] == ["R3", "R4", "R5", "R6", "R7"]
    assert rep["kvclusters"][0]["events"][-1]["age"] == "53m"
    (tp_event,) = rep["tracingpipelines"][0]["events"]
    assert (tp_event["type"], tp_event["count"], tp_event["age"]) == ("Warning", 3, "30s")
    assert "NotReady (x3)" in status.render_table(rep)


def test_select_narrows_to_a_cluster_and_its_pipeline_or_names_the_missing_name() -> None:
    rep = report(
        clusters=[kvcluster(), kvcluster(name="b", pipeline="other")],
        pipelines=[pipeline(), pipeline("other")],
    )
    one = status.select(rep, "kv")
    assert [c["name"] for c in one["kvclusters"]] == ["kv"]
    assert [p["name"] for p in one["tracingpipelines"]] == ["traces"]
    assert [p["name"] for p in status.select(rep, "other")["tracingpipelines"]] == ["other"]
    with pytest.raises(
        InspectError, match="NAME: no KVCluster or TracingPipeline named 'nope' in namespace store"
    ):
        status.select(rep, "nope")


def test_json_and_yaml_outputs_carry_the_same_report() -> None:
    rep = report()
    assert json.loads(status.render(rep, "json")) == rep
    assert yaml.safe_load(status.render(rep, "yaml")) == rep
    with pytest.raises(InspectError, match="-o/--output"):
        status.render(rep, "xml")


def test_empty_namespace_and_all_namespaces() -> None:
    assert (
        status.render_table(report(clusters=[], pipelines=[], pods=[]))
        == "No KVClusters or TracingPipelines in namespace store.\n"
    )
    rep = status.build_report(
        clusters=[kvcluster()], pipelines=[pipeline()], pods=[], events=[], now=NOW
    )
    assert "store/kv" in status.render_table(rep).splitlines()[1]


def test_no_status_yet_says_so() -> None:
    fresh = kvcluster()
    del fresh["status"]
    rep = report(clusters=[fresh], pods=[])
    assert rep["kvclusters"][0]["phase"] == "Unknown"
    assert (
        rep["kvclusters"][0]["endpoints"]["client"] == "https://kv.store.svc.cluster.local:7070"
    )  # TLS default
    assert "conditions: none yet (is the operator running?)" in status.render_table(rep)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (119, "119s"), (120, "2m"), (7199, "119m"), (7200, "2h"), (3 * 86400, "3d")],
)
def test_age(seconds: int, text: str) -> None:
    assert status.age(NOW - dt.timedelta(seconds=seconds), NOW) == text
    assert status.age(None, NOW) == "?"


def test_the_clusters_among_a_pipeline_s_consumers_typed_or_from_an_older_operator() -> None:
    typed = [
        {"kind": "Deployment", "namespace": "apps", "name": "web"},
        {"kind": "KVCluster", "namespace": NS, "name": "kv"},
    ]
    assert status.cluster_consumers(typed) == ["kv"]
    assert status.cluster_consumers(["kv", "kv2"]) == ["kv", "kv2"]
    assert status.cluster_consumers(None) == []
