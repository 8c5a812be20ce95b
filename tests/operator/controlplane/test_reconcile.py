"""The operator (``kvtrace operator run -n NS``) against the local cluster: both kinds reconcile
to Ready on KWOK nodes, and scaling, image and pipeline changes, pipeline deletion, deletion of
the resource or of a child, drift and a killed operator all converge."""

from __future__ import annotations

from typing import Any

import pytest

from kvtrace.devstack.operator_fixtures import Kube, Operator
from kvtrace_operator.render import (
    render_kvcluster,
    render_pipeline,
    tls,
)
from kvtrace_operator.spec import parse_kvcluster, parse_pipeline

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0  # generous: the machine running the suite is small and busy
CHECKSUM = "kvtrace.dev/config-checksum"
CHILD_KINDS = (
    "serviceaccounts,configmaps,services,statefulsets,deployments,poddisruptionbudgets,networkpolicies,"
    "roles,rolebindings,"  # the pipeline's Prometheus (spec.metrics)
    "secrets"
)  # the generated OTLP token Secret (auth is on by default)


def kvcluster(name: str = "kv", pipeline: str | None = "traces", **spec: Any) -> dict[str, Any]:
    spec.setdefault("replicas", 3)
    if pipeline:
        spec["tracing"] = {"pipelineRef": {"name": pipeline}}
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name},
        "spec": spec,
    }


def pipeline(name: str = "traces", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": name},
        "spec": spec,
    }


def ready(kube: Kube, poll: Any, kind: str, name: str) -> None:
    poll(
        lambda: kube.condition_is(kind, name, "Ready", "True"),
        timeout=TIMEOUT,
        message=f"{kind}/{name} Ready=True: {kube.condition(kind, name, 'Ready')}",
    )


def deploy(kube: Kube, poll: Any, *objects: dict[str, Any]) -> None:
    kube.apply(*objects)
    for obj in objects:
        ready(kube, poll, obj["kind"].lower(), obj["metadata"]["name"])


def rendered(owner: dict[str, Any], pipeline: dict[str, Any] | None = None) -> set[tuple[str, str]]:
    """What the operator must have created for ``owner`` (as live objects): the render, and
    its TLS Secrets (TLS is on by default for both kinds; their keys are made when it applies)."""
    if owner["kind"] == "KVCluster":
        objects = render_kvcluster(owner, pipeline)
        made = tls.written_secrets(owner, parse_kvcluster(owner.get("spec")))
    else:
        objects = render_pipeline(owner)
        made = tls.written_secrets(owner, parse_pipeline(owner.get("spec")))
    return {
        (obj["kind"], obj["metadata"]["name"])
        for obj in objects
        if obj["kind"] != "PersistentVolumeClaim"
    } | {("Secret", name) for name in made}


def children(kube: Kube, owner: dict[str, Any]) -> set[tuple[str, str]]:
    uid = owner["metadata"]["uid"]
    return {
        (item["kind"], item["metadata"]["name"])
        for item in kube.list(CHILD_KINDS, "app.kubernetes.io/managed-by=kvtrace-operator")
        if any(ref["uid"] == uid for ref in item["metadata"].get("ownerReferences", []))
    }


def statefulset(kube: Kube, name: str = "kv") -> dict[str, Any]:
    sts = kube.get("statefulset", name)
    assert sts is not None
    return sts


def template_checksum(kube: Kube) -> str:
    return str(statefulset(kube)["spec"]["template"]["metadata"]["annotations"][CHECKSUM])


def node_env(kube: Kube, name: str = "kv") -> dict[str, Any]:
    container = statefulset(kube, name)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def member_pods(kube: Kube) -> dict[str, dict[str, Any]]:
    pods = kube.list("pods", "app.kubernetes.io/instance=kv,app.kubernetes.io/component=kvnode")
    return {p["metadata"]["name"]: p for p in pods}


def reasons(kube: Kube, kind: str, name: str) -> set[str]:
    events = kube.list("events")
    return {
        e["reason"]
        for e in events
        if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name
    }


def test_both_kinds_reconcile_to_ready_with_truthful_status(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    deploy(kube_ns, poll, pipeline(), kvcluster())
    cluster, tp = kube_ns.get("kvcluster", "kv"), kube_ns.get("tracingpipeline", "traces")
    assert cluster and tp
    assert children(kube_ns, cluster) == rendered(cluster, tp)  # type: ignore[arg-type]
    assert children(kube_ns, tp) == rendered(tp)  # type: ignore[arg-type]
    assert ("StatefulSet", "kv") in children(kube_ns, cluster)  # type: ignore[arg-type]
    assert ("Deployment", "traces-collector") in children(kube_ns, tp)  # type: ignore[arg-type]
    pods = member_pods(kube_ns)
    assert sorted(pods) == ["kv-0", "kv-1", "kv-2"]
    assert all(p["status"]["phase"] == "Running" for p in pods.values())

    status = cluster["status"]
    assert (status["phase"], status["readyReplicas"], status["replicas"], status["readyText"]) == (
        "Running",
        3,
        3,
        "3/3",
    )
    assert status["observedGeneration"] == cluster["metadata"]["generation"]
    assert status["selector"].startswith("app.kubernetes.io/name=kvcluster")
    assert status["endpoints"]["client"] == f"https://kv.{kube_ns.namespace}.svc.cluster.local:7070"
    assert status["tracing"] == {"pipeline": "traces", "sampler": "parentbased_always_on"}
    assert status["configChecksum"] == template_checksum(kube_ns)
    assert kube_ns.condition_is(
        "kvcluster", "kv", "TracingConfigured", "True", "PipelineConfigured"
    )
    assert kube_ns.condition_is("kvcluster", "kv", "Degraded", "False")
    assert (
        node_env(kube_ns)["OTEL_EXPORTER_OTLP_ENDPOINT"]
        == f"https://traces-collector.{kube_ns.namespace}.svc.cluster.local:4318"
    )  # TLS by default

    poll(
        lambda: (
            (kube_ns.get("tracingpipeline", "traces") or {}).get("status", {}).get("consumers")
            == [{"kind": "KVCluster", "namespace": kube_ns.namespace, "name": "kv"}]
        ),
        timeout=TIMEOUT,
        message="pipeline status lists its consumer",
    )
    tp_status = kube_ns.get("tracingpipeline", "traces")["status"]  # type: ignore[index]
    assert tp_status["collector"]["ready"] == "1/1" and tp_status["jaeger"]["ready"] == "1/1"
    assert tp_status["endpoints"]["jaegerQuery"].endswith(":16686")
    for cond in ("ConfigValid", "CollectorReady", "JaegerReady"):
        assert kube_ns.condition_is("tracingpipeline", "traces", cond, "True")
    poll(
        lambda: {"Created", "Ready"} <= reasons(kube_ns, "KVCluster", "kv"),
        timeout=TIMEOUT,
        message="events for the cluster's actions",
    )


def test_scale_subresource_rewrites_peers_without_restarting_members(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    deploy(kube_ns, poll, pipeline(), kvcluster())
    before_pods = {name: pod["metadata"]["uid"] for name, pod in member_pods(kube_ns).items()}
    before_checksum = template_checksum(kube_ns)

    kube_ns.run("scale", "kvcluster", "kv", "--replicas=5")
    poll(
        lambda: (kube_ns.get("kvcluster", "kv") or {}).get("status", {}).get("readyText") == "5/5",
        timeout=TIMEOUT,
        message="5/5 members ready",
    )
    ready(kube_ns, poll, "kvcluster", "kv")
    peers = kube_ns.get("configmap", "kv-config")["data"]["peers"].splitlines()  # type: ignore[index]
    assert [line.split("=")[0] for line in peers] == [f"kv-{i}" for i in range(5)]
    assert template_checksum(kube_ns) == before_checksum
    after_pods = {name: pod["metadata"]["uid"] for name, pod in member_pods(kube_ns).items()}
    assert {name: after_pods[name] for name in before_pods} == before_pods  # nobody restarted
    assert kube_ns.get("kvcluster", "kv")["status"]["replicas"] == 5  # type: ignore[index]
    scale = kube_ns.run(
        "get",
        "--raw",
        f"/apis/kvtrace.dev/v1alpha1/namespaces/{kube_ns.namespace}/kvclusters/kv/scale",
    ).stdout
    assert '"replicas":5' in scale.replace(" ", "") and "app.kubernetes.io/instance=kv" in scale
    poll(
        lambda: "Scaling" in reasons(kube_ns, "KVCluster", "kv"),
        timeout=TIMEOUT,
        message="Scaling event",
    )


@pytest.mark.operator_args("--drain-timeout", "6")
def test_scale_down_keeps_leaving_members_until_drained_or_timed_out(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    deploy(kube_ns, poll, kvcluster(pipeline=None, replicas=4))
    kube_ns.run("scale", "kvcluster", "kv", "--replicas=3")
    poll(
        lambda: len(kube_ns.get("configmap", "kv-config")["data"]["peers"].splitlines()) == 3,  # type: ignore[index]
        timeout=TIMEOUT,
        message="kv-3 left the peers file",
    )
    # KWOK members cannot report that they drained: the StatefulSet keeps kv-3 until the timeout.
    poll(
        lambda: kube_ns.condition_is("kvcluster", "kv", "Progressing", "True", "Draining"),
        timeout=TIMEOUT,
        message="Progressing=True/Draining",
    )
    assert statefulset(kube_ns)["spec"]["replicas"] == 4
    assert "kv-3" in kube_ns.condition("kvcluster", "kv", "Progressing")["message"]  # type: ignore[index]
    poll(
        lambda: statefulset(kube_ns)["spec"]["replicas"] == 3,
        timeout=TIMEOUT,
        message="StatefulSet scaled down after the drain timeout",
    )
    assert {"Draining", "DrainTimeout"} <= reasons(kube_ns, "KVCluster", "kv")
    poll(
        lambda: sorted(member_pods(kube_ns)) == ["kv-0", "kv-1", "kv-2"],
        timeout=TIMEOUT,
        message="kv-3 removed",
    )
    ready(kube_ns, poll, "kvcluster", "kv")


def test_image_change_updates_the_statefulset(operator: Operator, kube_ns: Kube, poll: Any) -> None:
    deploy(kube_ns, poll, kvcluster(pipeline=None))
    image = "registry.example/kvtrace/kvnode:9.9.9"
    kube_ns.run(
        "patch", "kvcluster", "kv", "--type=merge", "-p", f'{{"spec":{{"image":"{image}"}}}}'
    )

    def rolled() -> bool:
        sts = statefulset(kube_ns)
        pods = member_pods(kube_ns).values()
        return (
            sts["spec"]["template"]["spec"]["containers"][0]["image"] == image
            and len(pods) == 3
            and all(p["spec"]["containers"][0]["image"] == image for p in pods)
        )

    poll(rolled, timeout=TIMEOUT, message="every member runs the new image")
    ready(kube_ns, poll, "kvcluster", "kv")
    assert kube_ns.condition_is("kvcluster", "kv", "TracingConfigured", "False", "TracingDisabled")


def test_pipeline_change_rolls_the_members_and_deletion_leaves_them_untraced(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    deploy(kube_ns, poll, pipeline(), kvcluster())
    first = template_checksum(kube_ns)

    kube_ns.run(
        "patch",
        "tracingpipeline",
        "traces",
        "--type=merge",
        "-p",
        '{"spec":{"sampling":{"mode":"head","ratio":0.5}}}',
    )
    poll(lambda: template_checksum(kube_ns) != first, timeout=TIMEOUT, message="checksum rolled")
    assert node_env(kube_ns)["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert node_env(kube_ns)["OTEL_TRACES_SAMPLER_ARG"] == "0.5"
    poll(
        lambda: (
            "errors"
            in (
                (kube_ns.get("tracingpipeline", "traces") or {})
                .get("status", {})
                .get("sampling", {})
                .get("note", "")
            )
        ),
        timeout=TIMEOUT,
        message="head-mode note in the pipeline status",
    )
    second = template_checksum(kube_ns)

    kube_ns.run("delete", "tracingpipeline", "traces", "--wait=false")
    poll(
        lambda: kube_ns.condition_is(
            "kvcluster", "kv", "TracingConfigured", "False", "PipelineNotFound"
        ),
        timeout=TIMEOUT,
        message="TracingConfigured=False/PipelineNotFound",
    )
    assert template_checksum(kube_ns) != second
    assert node_env(kube_ns).get("OTEL_SDK_DISABLED") == "true"
    ready(kube_ns, poll, "kvcluster", "kv")  # still running, untraced
    assert kube_ns.get("kvcluster", "kv")["status"]["tracing"] == {"pipeline": "", "sampler": ""}  # type: ignore[index]

    kube_ns.apply(pipeline())
    poll(
        lambda: kube_ns.condition_is("kvcluster", "kv", "TracingConfigured", "True"),
        timeout=TIMEOUT,
        message="traced again once the pipeline is back",
    )


def test_a_new_cluster_waits_for_its_pipeline_and_starts_its_members_once(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    """The cluster applied before its pipeline (as from one folder, or the pipeline's Secrets
    made a moment after the cluster): no member starts untraced to roll once the pipeline
    and its Secrets exist; the StatefulSet is written once, traced (generation 1)."""
    kube_ns.apply(kvcluster())

    def waiting() -> bool:
        cond = kube_ns.condition("kvcluster", "kv", "TracingConfigured") or {}
        return "the members start once it does" in cond.get("message", "")

    poll(waiting, timeout=TIMEOUT, message="the new cluster waits for its pipeline")
    assert kube_ns.get("statefulset", "kv") is None, "members started before the pipeline"
    kube_ns.apply(pipeline())
    poll(
        lambda: kube_ns.condition_is("kvcluster", "kv", "TracingConfigured", "True"),
        timeout=TIMEOUT,
        message="traced once the pipeline exists",
    )
    ready(kube_ns, poll, "kvcluster", "kv")
    sts = statefulset(kube_ns)
    assert sts["metadata"]["generation"] == 1, "the StatefulSet was written twice: pods rolled"
    assert "OTEL_SDK_DISABLED" not in node_env(kube_ns)
    assert node_env(kube_ns)["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("https://traces-collector.")


def test_deleting_the_resource_garbage_collects_its_children(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    deploy(kube_ns, poll, pipeline(), kvcluster())
    kube_ns.run("delete", "kvcluster", "kv", "--wait=false")
    kube_ns.run("delete", "tracingpipeline", "traces", "--wait=false")
    # The operator lets them go (kopf's finalizer, held for the timers, is removed)...
    poll(
        lambda: (
            kube_ns.get("kvcluster", "kv") is None
            and kube_ns.get("tracingpipeline", "traces") is None
        ),
        timeout=TIMEOUT,
        message="resources deleted",
    )
    # ...and the garbage collector deletes the children through their owner references.
    poll(
        lambda: not kube_ns.list(CHILD_KINDS, "app.kubernetes.io/managed-by=kvtrace-operator"),
        timeout=2 * TIMEOUT,
        message="children garbage-collected",
    )
    poll(lambda: not member_pods(kube_ns), timeout=TIMEOUT, message="member pods gone")


def test_a_child_deleted_or_changed_by_hand_is_repaired(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    deploy(kube_ns, poll, pipeline(), kvcluster())
    old = {
        kind: kube_ns.get(kind, name)["metadata"]["uid"]  # type: ignore[index]
        for kind, name in (("service", "kv"), ("configmap", "kv-config"))
    }
    kube_ns.run("delete", "service", "kv")
    kube_ns.run("delete", "configmap", "kv-config")
    kube_ns.run("delete", "deployment", "traces-collector")

    def back(kind: str, name: str, old_uid: str | None = None) -> bool:
        obj = kube_ns.get(kind, name)
        return obj is not None and obj["metadata"]["uid"] != old_uid

    for kind, name in (("service", "kv"), ("configmap", "kv-config")):
        poll(
            lambda: back(kind, name, old[kind]),  # noqa: B023 - polled in this round
            timeout=TIMEOUT,
            message=f"{kind}/{name} re-created",
        )
    poll(
        lambda: back("deployment", "traces-collector"),
        timeout=TIMEOUT,
        message="collector re-created",
    )

    # Drift in fields we own (the timer repairs it; --resync-interval 3 in tests).
    peers = kube_ns.get("configmap", "kv-config")["data"]["peers"]  # type: ignore[index]
    kube_ns.run(
        "patch",
        "configmap",
        "kv-config",
        "--type=merge",
        "-p",
        '{"data":{"peers":"kv-0=nowhere:1\\n"}}',
    )
    kube_ns.run(
        "patch",
        "service",
        "kv-peers",
        "--type=merge",
        "-p",
        '{"spec":{"publishNotReadyAddresses":false}}',
    )
    poll(
        lambda: kube_ns.get("configmap", "kv-config")["data"]["peers"] == peers,  # type: ignore[index]
        timeout=TIMEOUT,
        message="peers file restored",
    )
    poll(
        lambda: kube_ns.get("service", "kv-peers")["spec"].get("publishNotReadyAddresses") is True,  # type: ignore[index]
        timeout=TIMEOUT,
        message="headless Service restored",
    )
    ready(kube_ns, poll, "kvcluster", "kv")


def test_operator_killed_mid_reconcile_converges_after_restart(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    kube_ns.apply(pipeline(), kvcluster())
    # Kill it as soon as it has started writing children.
    poll(
        lambda: kube_ns.list("configmaps", "app.kubernetes.io/managed-by=kvtrace-operator"),
        timeout=TIMEOUT,
        interval=0.05,
        message="the operator started applying",
    )
    operator.kill()
    operator.start()
    ready(kube_ns, poll, "tracingpipeline", "traces")
    ready(kube_ns, poll, "kvcluster", "kv")
    cluster, tp = kube_ns.get("kvcluster", "kv"), kube_ns.get("tracingpipeline", "traces")
    assert children(kube_ns, cluster) == rendered(cluster, tp)  # type: ignore[arg-type]
    assert children(kube_ns, tp) == rendered(tp)  # type: ignore[arg-type]
    assert sorted(member_pods(kube_ns)) == ["kv-0", "kv-1", "kv-2"]
    collector_pods = kube_ns.list("pods", "app.kubernetes.io/component=collector")
    assert len([p for p in collector_pods if not p["metadata"].get("deletionTimestamp")]) == 1


def test_invalid_spec_becomes_a_condition_nothing_is_half_applied_and_others_reconcile(
    operator: Operator, kube_ns: Kube, poll: Any
) -> None:
    # What the schema cannot check (a request above its limit; an affinity the CRD passes
    # through): the API server accepts the resources and rejects the children, which a
    # server-side dry run finds before anything is written.
    broken = pipeline(
        collector={"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}
    )
    bad = kvcluster("bad", pipeline=None, scheduling={"affinity": {"podAntiAffinity": "bad"}})
    kube_ns.apply(broken, kvcluster("good"), bad)
    poll(
        lambda: kube_ns.condition_is(
            "tracingpipeline", "traces", "ConfigValid", "False", "InvalidSpec"
        ),
        timeout=TIMEOUT,
        message="pipeline ConfigValid=False",
    )
    message = kube_ns.condition("tracingpipeline", "traces", "ConfigValid")["message"]  # type: ignore[index]
    assert "Deployment/traces-collector" in message, message
    assert "must be less than or equal to memory limit" in message, message
    poll(
        lambda: kube_ns.condition_is("kvcluster", "bad", "Ready", "False", "InvalidSpec"),
        timeout=TIMEOUT,
        message="cluster Ready=False/InvalidSpec",
    )
    assert "affinity" in kube_ns.condition("kvcluster", "bad", "Ready")["message"]  # type: ignore[index]
    assert kube_ns.get("kvcluster", "bad")["status"]["phase"] == "Failed"  # type: ignore[index]
    poll(
        lambda: "InvalidSpec" in reasons(kube_ns, "KVCluster", "bad"),
        timeout=TIMEOUT,
        message="InvalidSpec event",
    )
    # Nothing half-applied for either.
    assert not children(kube_ns, kube_ns.get("kvcluster", "bad"))  # type: ignore[arg-type]
    assert not children(kube_ns, kube_ns.get("tracingpipeline", "traces"))  # type: ignore[arg-type]
    # The cluster referencing the broken pipeline still runs, untraced, and says why.
    ready(kube_ns, poll, "kvcluster", "good")
    poll(
        lambda: kube_ns.condition_is(
            "kvcluster", "good", "TracingConfigured", "False", "PipelineInvalid"
        ),
        timeout=TIMEOUT,
        message="TracingConfigured=False/PipelineInvalid",
    )
    assert node_env(kube_ns, "good").get("OTEL_SDK_DISABLED") == "true"

    # Fixing the pipeline traces the cluster.
    kube_ns.run(
        "patch",
        "tracingpipeline",
        "traces",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/collector/resources"}]',
    )
    ready(kube_ns, poll, "tracingpipeline", "traces")
    poll(
        lambda: kube_ns.condition_is("kvcluster", "good", "TracingConfigured", "True"),
        timeout=TIMEOUT,
        message="traced once the pipeline is fixed",
    )
    assert operator.proc is not None and operator.proc.poll() is None  # never crashed
