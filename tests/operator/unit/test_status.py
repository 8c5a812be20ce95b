"""Status and conditions of KVCluster and TracingPipeline (render/status.py, pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kvtrace_operator.render.status import (
    PHASE_DEGRADED,
    PHASE_FAILED,
    PHASE_PENDING,
    PHASE_PROGRESSING,
    PHASE_RUNNING,
    TRACING_CONFIGURED,
    TRACING_DISABLED,
    TRACING_INVALID,
    TRACING_NOT_FOUND,
    condition,
    find_condition,
    kvcluster_status,
    merge_conditions,
    pipeline_status,
    tracing_state,
    workload_summary,
)

pytestmark = pytest.mark.unit

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"


def cluster(
    replicas: int = 3,
    rf: int = 3,
    generation: int = 2,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv", "namespace": "ns1", "uid": "u1", "generation": generation},
        "spec": {
            "replicas": replicas,
            "replicationFactor": rf,
            "tracing": {"pipelineRef": {"name": "traces"}},
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def statefulset(
    desired: int = 3,
    ready: int = 3,
    replicas: int | None = None,
    updated: int | None = None,
    generation: int = 1,
    observed: int = 1,
    current: str = "r1",
    target: str = "r1",
    kind: str = "StatefulSet",
    name: str = "kv",
    component: str = "kvnode",
) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {
            "name": name,
            "generation": generation,
            "labels": {"app.kubernetes.io/component": component},
        },
        "spec": {
            "replicas": desired,
            "template": {"metadata": {"annotations": {"kvtrace.dev/config-checksum": "abc"}}},
        },
        "status": {
            "replicas": desired if replicas is None else replicas,
            "readyReplicas": ready,
            "updatedReplicas": desired if updated is None else updated,
            "observedGeneration": observed,
            "currentRevision": current,
            "updateRevision": target,
        },
    }


TRACED = tracing_state(
    "traces",
    found=True,
    endpoint="http://c:4318",
    mode="production",
    sampler="parentbased_always_on",
)


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


# --------------------------------------------------------------------------- conditions


def test_condition_has_every_field_of_the_api_conventions() -> None:
    c = condition("Ready", True, "AllMembersReady", "3/3", generation=4, now=T0)
    assert c == {
        "type": "Ready",
        "status": "True",
        "reason": "AllMembersReady",
        "message": "3/3",
        "lastTransitionTime": T0,
        "observedGeneration": 4,
    }
    assert condition("X", "Unknown", "R", "m", generation=None, now=T0)["status"] == "Unknown"
    with pytest.raises(ValueError):
        condition("X", "maybe", "R", "m", generation=1, now=T0)


def test_last_transition_time_kept_while_status_unchanged() -> None:
    old = [
        condition("Ready", False, "MembersNotReady", "0/3", generation=1, now=T0),
        condition("Degraded", False, "AsExpected", "", generation=1, now=T0),
    ]
    new = [
        condition("Ready", False, "MembersNotReady", "1/3", generation=2, now=T1),
        condition("Degraded", True, "QuorumLost", "", generation=2, now=T1),
    ]
    merged = merge_conditions(old, new)
    assert merged[0]["lastTransitionTime"] == T0  # same status: time kept, message updated
    assert merged[0]["message"] == "1/3" and merged[0]["observedGeneration"] == 2
    assert merged[1]["lastTransitionTime"] == T1  # flipped: new time
    assert merge_conditions(None, new) == new


# --------------------------------------------------------------------------- workloads


@pytest.mark.parametrize(
    ("sts", "rolled_out", "ready"),
    [
        (statefulset(), True, True),
        (statefulset(ready=2), True, False),
        (statefulset(generation=2, observed=1), False, False),
        (statefulset(updated=1), False, False),
        (statefulset(current="r1", target="r2"), False, False),
        (statefulset(replicas=4), False, False),  # scaling down: a member still exists
    ],
)
def test_workload_summary_rollout_state(sts: dict[str, Any], rolled_out: bool, ready: bool) -> None:
    summary = workload_summary(sts)
    assert (summary["rolledOut"], summary["ready"]) == (rolled_out, ready)
    assert summary["configChecksum"] == "abc"


def test_deployment_summary_ignores_revisions_and_defaults_replicas_to_one() -> None:
    dep = statefulset(kind="Deployment", current="a", target="b")
    del dep["spec"]["replicas"]
    dep["status"].update(replicas=1, updatedReplicas=1, readyReplicas=1)
    summary = workload_summary(dep)
    assert summary["desired"] == 1 and summary["ready"]


# --------------------------------------------------------------------------- KVCluster


def test_cluster_all_ready() -> None:
    status = kvcluster_status(
        cluster(), statefulset=workload_summary(statefulset()), tracing=TRACED, now=T0
    )
    c = conds(status)
    assert status["phase"] == PHASE_RUNNING
    assert (c["Ready"]["status"], c["Progressing"]["status"], c["Degraded"]["status"]) == (
        "True",
        "False",
        "False",
    )
    assert c["TracingConfigured"]["status"] == "True"
    assert c["TracingConfigured"]["reason"] == TRACING_CONFIGURED
    assert all(cond["observedGeneration"] == 2 for cond in status["conditions"])
    assert status["observedGeneration"] == 2
    assert (status["replicas"], status["readyReplicas"], status["readyText"]) == (3, 3, "3/3")
    assert status["selector"] == (
        "app.kubernetes.io/name=kvcluster,app.kubernetes.io/instance=kv,"
        "app.kubernetes.io/component=kvnode"
    )
    assert (
        status["endpoints"]["client"] == "https://kv.ns1.svc.cluster.local:7070"
    )  # TLS by default
    assert status["endpoints"]["peers"] == "kv-peers.ns1.svc.cluster.local"
    assert status["tracing"] == {"pipeline": "traces", "sampler": "parentbased_always_on"}
    assert status["configChecksum"] == "abc"
    assert [c["type"] for c in status["conditions"]] == [
        "Ready",
        "Progressing",
        "Degraded",
        "TracingConfigured",
    ]


def test_cluster_before_the_statefulset_exists_is_pending_and_progressing() -> None:
    status = kvcluster_status(cluster(), statefulset=None, tracing=TRACED, now=T0)
    c = conds(status)
    assert status["phase"] == PHASE_PENDING
    assert c["Ready"]["status"] == "False" and c["Progressing"]["reason"] == "Creating"
    assert status["replicas"] == 0 and status["readyText"] == "0/3"


def test_cluster_starting_members_are_pending_not_degraded() -> None:
    status = kvcluster_status(
        cluster(), statefulset=workload_summary(statefulset(ready=1)), tracing=TRACED, now=T0
    )
    c = conds(status)
    assert status["phase"] == PHASE_PENDING
    assert c["Degraded"]["status"] == "False"
    assert c["Progressing"]["reason"] == "Starting"
    assert "quorum not available" in c["Ready"]["message"]


@pytest.mark.parametrize(
    ("ready", "reason", "quorum_text"),
    [
        (2, "MembersUnavailable", "quorum available"),
        (1, "QuorumLost", "quorum not available"),
    ],
)
def test_cluster_losing_members_after_being_ready_is_degraded(
    ready: int, reason: str, quorum_text: str
) -> None:
    was = cluster(status={"readyReplicas": 3})
    status = kvcluster_status(
        was, statefulset=workload_summary(statefulset(ready=ready)), tracing=TRACED, now=T0
    )
    c = conds(status)
    assert status["phase"] == PHASE_DEGRADED
    assert c["Degraded"]["status"] == "True" and c["Degraded"]["reason"] == reason
    assert quorum_text in c["Degraded"]["message"]


def test_cluster_scaling_is_progressing() -> None:
    # spec says 5; the StatefulSet was applied with 5 and has 3 so far
    status = kvcluster_status(
        cluster(replicas=5),
        statefulset=workload_summary(statefulset(desired=5, replicas=3, ready=3)),
        tracing=TRACED,
        now=T0,
    )
    c = conds(status)
    assert status["phase"] == PHASE_PROGRESSING
    assert c["Progressing"]["status"] == "True" and c["Progressing"]["reason"] == "Scaling"
    assert "from 3 to 5" in c["Progressing"]["message"]
    assert c["Ready"]["status"] == "False"
    assert status["replicas"] == 3 and status["readyText"] == "3/5"


def test_cluster_draining_leaving_members_is_progressing() -> None:
    # spec says 3; the StatefulSet still keeps kv-3 (4 desired, 4 ready) while it drains
    status = kvcluster_status(
        cluster(replicas=3, status={"readyReplicas": 4}),
        statefulset=workload_summary(statefulset(desired=4, ready=4)),
        tracing=TRACED,
        now=T0,
        draining=["kv-3"],
    )
    c = conds(status)
    assert status["phase"] == PHASE_PROGRESSING
    assert c["Progressing"]["reason"] == "Draining" and "kv-3" in c["Progressing"]["message"]
    assert c["Degraded"]["status"] == "False"
    assert status["readyText"] == "4/3"


def test_cluster_rolling_update_is_progressing() -> None:
    status = kvcluster_status(
        cluster(), statefulset=workload_summary(statefulset(target="r2")), tracing=TRACED, now=T0
    )
    c = conds(status)
    assert c["Progressing"]["reason"] == "RollingUpdate"
    assert c["Ready"]["status"] == "False" and status["phase"] == PHASE_PROGRESSING


@pytest.mark.parametrize(
    ("sts", "draining", "message"),
    [
        (None, [], "0/3 members ready: the StatefulSet is not created yet; quorum not available"),
        (
            statefulset(target="r2"),
            [],
            "3/3 members ready, but the StatefulSet has not finished rolling out the current pod template; "
            "quorum available",
        ),
        (
            statefulset(updated=1, target="r2"),
            [],
            "3/3 members ready, but only 1/3 run the current pod template (rolling update); quorum available",
        ),
        (
            statefulset(desired=3, replicas=4, ready=4),
            [],
            "4/3 members ready, but the StatefulSet has 4 of 3 (scaling); quorum available",
        ),
        (
            statefulset(desired=4, ready=4),
            ["kv-3"],
            "4/3 members ready, kv-3 draining before the scale-down; quorum available",
        ),
        (statefulset(ready=1), [], "1/3 members ready; quorum not available"),
    ],
)
def test_members_not_ready_says_why_even_when_every_member_is_ready(
    sts: dict[str, Any] | None, draining: list[str], message: str
) -> None:
    status = kvcluster_status(
        cluster(),
        statefulset=workload_summary(sts) if sts else None,
        tracing=TRACED,
        now=T0,
        draining=draining,
    )
    ready = conds(status)["Ready"]
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "MembersNotReady",
        f"{message} (2 of replication factor 3)",
    )


def test_invalid_spec_names_the_field_and_keeps_observed_counts() -> None:
    status = kvcluster_status(
        cluster(),
        statefulset=None,
        tracing=TRACED,
        now=T0,
        spec_error="spec.replicationFactor: must be at most spec.replicas (1)",
    )
    c = conds(status)
    assert status["phase"] == PHASE_FAILED
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "InvalidSpec"
    assert "spec.replicationFactor" in c["Ready"]["message"]
    assert c["Degraded"]["status"] == "True"


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (tracing_state("traces", found=False), TRACING_NOT_FOUND),
        (
            tracing_state("traces", found=True, error="spec.sampling.ratio: too big"),
            TRACING_INVALID,
        ),
        (tracing_state(None, found=False), TRACING_DISABLED),
    ],
)
def test_untraced_cluster_runs_and_says_why(state: dict[str, Any], reason: str) -> None:
    status = kvcluster_status(
        cluster(), statefulset=workload_summary(statefulset()), tracing=state, now=T0
    )
    c = conds(status)
    assert c["Ready"]["status"] == "True"  # the cluster still runs
    assert c["TracingConfigured"]["status"] == "False"
    assert c["TracingConfigured"]["reason"] == reason
    assert status["tracing"] == {"pipeline": "", "sampler": ""}
    if reason == TRACING_NOT_FOUND:
        assert "'traces'" in c["TracingConfigured"]["message"]
        assert "spec.tracing.pipelineRef.name" in c["TracingConfigured"]["message"]


def test_a_new_cluster_waiting_for_its_pipeline_says_how_long_and_what_then() -> None:
    status = kvcluster_status(
        cluster(),
        statefulset=None,
        tracing=tracing_state("traces", found=False, awaited_s=20.0),
        now=T0,
    )
    c = conds(status)
    assert c["TracingConfigured"]["reason"] == TRACING_NOT_FOUND
    message = c["TracingConfigured"]["message"]
    assert "'traces'" in message and "the members start once it does" in message
    assert "untraced 20s after the cluster's creation" in message
    assert c["Ready"]["status"] == "False" and status["readyReplicas"] == 0


def test_cluster_status_is_deterministic_and_transition_times_survive_a_resync() -> None:
    first = kvcluster_status(
        cluster(), statefulset=workload_summary(statefulset()), tracing=TRACED, now=T0
    )
    again = kvcluster_status(
        cluster(status=copy.deepcopy(first)),
        statefulset=workload_summary(statefulset()),
        tracing=TRACED,
        now=T1,
    )
    assert again == first  # nothing changed, so nothing to patch


# --------------------------------------------------------------------------- TracingPipeline


def pipeline(
    mode: str = "production",
    jaeger: bool = True,
    status: dict[str, Any] | None = None,
    **sampling: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "ns1", "uid": "p1", "generation": 3},
        "spec": {"sampling": {"mode": mode, **sampling}, "jaeger": {"enabled": jaeger}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def deployment(name: str, component: str, ready: int = 1, desired: int = 1) -> dict[str, Any]:
    return workload_summary(
        statefulset(kind="Deployment", name=name, component=component, desired=desired, ready=ready)
    )


COLLECTOR = deployment("traces-collector", "collector")
JAEGER = deployment("traces-jaeger", "jaeger")


def test_pipeline_ready_with_endpoints_and_consumers() -> None:
    status = pipeline_status(
        pipeline(),
        workloads=[COLLECTOR, JAEGER],
        consumers=[
            ("KVCluster", "b"),
            ("Workload", "apps/Deployment/web"),
            ("KVCluster", "a"),
            ("KVCluster", "a"),
        ],
        now=T0,
    )
    c = conds(status)
    assert [x["type"] for x in status["conditions"]] == [
        "Ready",
        "ConfigValid",
        "CollectorReady",
        "JaegerReady",
    ]
    assert all(x["status"] == "True" for x in status["conditions"])
    # Typed, each once: the KVClusters in the pipeline's namespace, an injected workload in its own.
    assert status["consumers"] == [
        {"kind": "Deployment", "namespace": "apps", "name": "web"},
        {"kind": "KVCluster", "namespace": "ns1", "name": "a"},
        {"kind": "KVCluster", "namespace": "ns1", "name": "b"},
    ]
    assert (
        status["endpoints"]["otlpHttp"] == "https://traces-collector.ns1.svc.cluster.local:4318"
    )  # TLS default
    assert status["endpoints"]["otlpGrpc"] == "https://traces-collector.ns1.svc.cluster.local:4317"
    assert (
        status["endpoints"]["jaegerQuery"]
        == "https://traces-jaeger-query.ns1.svc.cluster.local:16686"
    )
    assert "every trace with an error" in c["Ready"]["message"]
    assert status["observedGeneration"] == 3
    assert status["phase"] == PHASE_RUNNING
    assert status["collector"] == {"replicas": 1, "readyReplicas": 1, "ready": "1/1", "tiers": 1}
    assert status["jaeger"] == {"replicas": 1, "readyReplicas": 1, "ready": "1/1"}
    assert status["sampling"]["sdkSampler"] == "parentbased_always_on"
    assert status["sampling"]["tailSampling"] is True
    assert status["configChecksum"] == "abc"


def test_head_mode_says_errors_are_sampled_too() -> None:
    status = pipeline_status(
        pipeline("head", ratio=0.25), workloads=[COLLECTOR, JAEGER], consumers=[], now=T0
    )
    message = conds(status)["Ready"]["message"]
    assert "errors" in message and "sampled" in message and "0.25" in message
    assert "not every error is kept" in status["sampling"]["note"]
    assert status["sampling"]["sdkSampler"] == "parentbased_traceidratio"
    assert status["sampling"]["tailSampling"] is False


def test_pipeline_waits_for_each_tier() -> None:
    sampling_tier = deployment(
        "traces-collector-sampling", "collector-sampling", ready=1, desired=2
    )
    two = pipeline()
    two["spec"]["collector"] = {"replicas": 2}
    status = pipeline_status(two, workloads=[COLLECTOR, sampling_tier], consumers=[], now=T0)
    c = conds(status)
    assert status["collector"] == {"replicas": 3, "readyReplicas": 2, "ready": "2/3", "tiers": 2}
    assert status["jaeger"]["ready"] == "0/0"
    assert (
        c["CollectorReady"]["status"] == "False"
        and c["CollectorReady"]["reason"] == "ReplicasNotReady"
    )
    assert "traces-collector-sampling 1/2 ready" in c["CollectorReady"]["message"]
    assert c["JaegerReady"]["reason"] == "NotCreated"
    assert c["Ready"]["status"] == "False" and status["phase"] == PHASE_PENDING
    was_running = {**two, "status": {"phase": PHASE_RUNNING}}
    again = pipeline_status(was_running, workloads=[COLLECTOR, sampling_tier], consumers=[], now=T0)
    assert again["phase"] == PHASE_DEGRADED
    rolling = deployment("traces-jaeger", "jaeger")
    rolling["rolledOut"] = rolling["ready"] = False
    assert (
        pipeline_status(pipeline(), workloads=[COLLECTOR, rolling], consumers=[], now=T0)["phase"]
        == PHASE_PROGRESSING
    )


def test_the_pipelines_prometheus_is_neither_a_collector_nor_jaeger() -> None:
    """spec.metrics deploys a Prometheus Deployment beside the tiers: it is not counted as a
    collector (which would make one tier read 2/2) and a Prometheus still starting never holds
    CollectorReady or Ready back (metrics never block traces)."""
    starting = deployment("traces-prometheus", "prometheus", ready=0)
    status = pipeline_status(
        pipeline(), workloads=[COLLECTOR, JAEGER, starting], consumers=[], now=T0
    )
    assert status["collector"] == {"replicas": 1, "readyReplicas": 1, "ready": "1/1", "tiers": 1}
    assert status["jaeger"] == {"replicas": 1, "readyReplicas": 1, "ready": "1/1"}
    assert conds(status)["Ready"]["status"] == "True" and status["configChecksum"] == "abc"


def test_pipeline_without_jaeger_is_ready_without_it() -> None:
    status = pipeline_status(pipeline(jaeger=False), workloads=[COLLECTOR], consumers=[], now=T0)
    c = conds(status)
    assert c["Ready"]["status"] == "True"
    assert c["JaegerReady"]["status"] == "False" and c["JaegerReady"]["reason"] == "Disabled"
    assert "jaegerQuery" not in status["endpoints"]


def test_invalid_pipeline_is_config_valid_false_naming_the_field() -> None:
    status = pipeline_status(
        pipeline(),
        workloads=[],
        consumers=[("KVCluster", "kv")],
        now=T0,
        spec_error="spec.sampling.keepErrors: head sampling cannot keep every error",
    )
    c = conds(status)
    assert c["ConfigValid"]["status"] == "False" and c["ConfigValid"]["reason"] == "InvalidSpec"
    assert c["ConfigValid"]["message"].startswith("spec.sampling.keepErrors")
    assert c["Ready"]["status"] == "False" and status["phase"] == PHASE_FAILED
    assert c["CollectorReady"]["status"] == "Unknown"
    assert status["consumers"] == [{"kind": "KVCluster", "namespace": "ns1", "name": "kv"}]


def test_find_condition() -> None:
    status = pipeline_status(pipeline(), workloads=[COLLECTOR, JAEGER], consumers=[], now=T0)
    assert find_condition(status, "JaegerReady")["status"] == "True"  # type: ignore[index]
    assert find_condition(status, "Nope") is None and find_condition(None, "Ready") is None
