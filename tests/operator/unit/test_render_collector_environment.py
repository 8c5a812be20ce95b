"""spec.collector.resourceDetection and .kubernetesAttributes (render/environment.py): the
processors' configs, their order, the collector pod's node name and token, the least RBAC the
operator renders, and the refusals (CRD schema and CEL rules, and the renderer's own)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import yaml
from render_testlib import pipeline

from kvtrace_operator import crds
from kvtrace_operator.render import environment, render_collector_config, render_pipeline, strict
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

CONTRIB = "otel/opentelemetry-collector-contrib:0.161.0"
CLOUD = sorted(environment.CLOUD_PROVIDERS)


def tp(**collector: Any) -> dict[str, Any]:
    return pipeline(collector=collector)


def settings(**collector: Any) -> environment.Environment:
    resource = tp(**collector)
    return environment.environment(resource, parse_pipeline(resource["spec"]))


def processors(config: dict[str, Any]) -> list[str]:
    return list(config["service"]["pipelines"]["traces"]["processors"])


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def schema_errors(**collector: Any) -> list[str]:
    schema = crds.schemas()[("kvtrace.dev/v1alpha1", "TracingPipeline")]
    return [str(error) for error in strict.check(tp(**collector), schema).errors]


class TestDefaults:
    def test_detectors_env_system_and_the_node(self) -> None:
        config = render_collector_config(tp())["processors"]["resource_detection"]
        assert config == {
            "detectors": ["env", "system", "k8s_api"],
            "timeout": "5s",
            "override": False,
            "system": {"hostname_sources": ["os"]},
            "k8s_api": {
                "auth_type": "kubeConfig",
                "node_from_env_var": "K8S_NODE_NAME",
                "resource_attributes": {
                    "k8s.cluster.uid": {"enabled": False},
                    "k8s.node.uid": {"enabled": False},
                },
            },
        }

    def test_k8s_attributes_as_the_helm_preset_in_the_pipelines_namespace(self) -> None:
        config = render_collector_config(tp())["processors"]["k8s_attributes"]
        assert config["auth_type"] == "kubeConfig"
        assert config["filter"] == {"namespace": "store"}
        assert config["pod_association"] == [
            {"sources": [{"from": "resource_attribute", "name": "k8s.pod.ip"}]},
            {"sources": [{"from": "resource_attribute", "name": "k8s.pod.uid"}]},
            {"sources": [{"from": "connection"}]},
        ]
        metadata = config["extract"]["metadata"]
        assert {
            "k8s.namespace.name",
            "k8s.pod.name",
            "k8s.node.name",
            "k8s.deployment.name",
            "k8s.statefulset.name",
        } <= set(metadata)
        # Nothing that needs a cluster-wide read.
        assert not {"k8s.node.uid", "k8s.cluster.uid", "k8s.deployment.uid"} & set(metadata)
        assert "labels" not in config["extract"] and "annotations" not in config["extract"]

    @pytest.mark.parametrize(
        ("mode", "replicas"), [("production", 1), ("production", 3), ("head", 2)]
    )
    def test_order_pod_metadata_then_detection_at_the_edge_only(
        self, mode: str, replicas: int
    ) -> None:
        resource = pipeline(sampling={"mode": mode}, collector={"replicas": replicas})
        edge = render_collector_config(
            resource, "loadbalancer" if replicas > 1 and mode == "production" else "sampling"
        )
        order = processors(edge)
        assert order[:3] == ["memory_limiter", "k8s_attributes", "resource_detection"]
        assert order[-1] == "batch"
        if mode == "production":  # before tail sampling, which loses the connection
            assert order.index("k8s_attributes") < len(order) - 1
        if replicas > 1 and mode == "production":
            back = render_collector_config(resource, "sampling")
            assert not {"k8s_attributes", "resource_detection"} & set(processors(back))

    @pytest.mark.parametrize("replicas", [1, 3])
    def test_only_the_edge_pod_gets_a_token_and_its_node_name(self, replicas: int) -> None:
        objects = render_pipeline(tp(replicas=replicas))
        edge = one(objects, "Deployment", "traces-collector")["spec"]["template"]["spec"]
        assert edge["automountServiceAccountToken"] is True
        assert one(objects, "ServiceAccount", "traces-collector")["automountServiceAccountToken"]
        assert {
            "name": "K8S_NODE_NAME",
            "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
        } in edge["containers"][0]["env"]
        others = [
            o
            for o in objects
            if o["kind"] == "Deployment"
            and o["metadata"]["name"] in ("traces-collector-sampling", "traces-jaeger")
        ]
        assert others  # Jaeger, and the sampling tier with replicas > 1
        for deployment in others:
            pod = deployment["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False, deployment["metadata"]["name"]
            names = [e["name"] for c in pod["containers"] for e in c.get("env") or []]
            assert "K8S_NODE_NAME" not in names

    def test_the_role_reads_pods_of_the_namespace_only(self) -> None:
        objects = render_pipeline(tp())
        role = one(objects, "Role", "traces-collector")
        assert role["metadata"]["namespace"] == "store"
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
        ]
        binding = one(objects, "RoleBinding", "traces-collector")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "traces-collector",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "traces-collector", "namespace": "store"}
        ]
        kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
        assert kinds.index(("Role", "traces-collector")) < kinds.index(
            ("Deployment", "traces-collector")
        )
        assert not [o for o in objects if o["kind"].startswith("Cluster")]


# Every detector alone, none, the defaults with each cloud, and pairs of clouds.
COMBINATIONS = (
    [[d] for d in environment.DETECTORS if d not in environment.CONTRIB_ONLY_DETECTORS]
    + [[]]
    + [
        ["env", "system", "k8snode", cloud]
        for cloud in CLOUD
        if cloud not in environment.CONTRIB_ONLY_DETECTORS
    ]
    + [["eks", "ec2"], ["aks", "azure"], ["gcp", "env"]]
)


@pytest.mark.parametrize("detectors", COMBINATIONS, ids=lambda d: "-".join(d) or "none")
def test_every_detector_combination_renders_and_passes_the_crd(detectors: list[str]) -> None:
    collector: dict[str, Any] = {"resourceDetection": {"detectors": detectors}}
    if set(detectors) & set(environment.CONTRIB_ONLY_DETECTORS):  # refused with our image
        collector["image"] = CONTRIB
    assert schema_errors(**collector) == []
    config = render_collector_config(tp(**collector))
    rendered = ["k8s_api" if d == "k8snode" else d for d in detectors]
    if not detectors:
        assert "resource_detection" not in config["processors"]
        return
    detection = config["processors"]["resource_detection"]
    assert detection["detectors"] == rendered
    assert ("k8s_api" in detection) == ("k8s_api" in rendered)
    assert ("system" in detection) == ("system" in rendered)
    # No cloud detector gets an endpoint or credentials of ours: each asks its own metadata
    # service, which only the cloud it runs on answers; eks reads its node like k8snode.
    assert set(detection) <= {"detectors", "timeout", "override", "system", "k8s_api", "eks"}
    if "eks" in rendered:
        assert detection["eks"] == {"node_from_env_var": "K8S_NODE_NAME"}
    objects = render_pipeline(tp(**collector))
    pod = one(objects, "Deployment", "traces-collector")["spec"]["template"]["spec"]
    node_readers = {"k8s_api", "eks"} & set(rendered)
    names = [e["name"] for e in pod["containers"][0].get("env") or []]
    assert ("K8S_NODE_NAME" in names) == bool(node_readers)
    assert pod["automountServiceAccountToken"] is True  # k8s_attributes, on by default


@pytest.mark.parametrize("detector", environment.CONTRIB_ONLY_DETECTORS)
def test_detectors_our_distribution_cannot_run_need_the_contrib_image(detector: str) -> None:
    collector = {"resourceDetection": {"detectors": ["env", detector]}}
    with pytest.raises(SpecError) as raised:
        render_pipeline(tp(**collector))
    assert raised.value.field == "spec.collector.resourceDetection.detectors[1]"
    assert "otel/opentelemetry-collector-contrib:0.161.0" in str(raised.value)
    # Our image pushed to another registry is still our distribution.
    with pytest.raises(SpecError):
        render_pipeline(tp(image="registry.example.com/team/otelcol-kvtrace:0.161.0", **collector))
    config = render_collector_config(tp(image=CONTRIB, **collector))
    assert config["processors"]["resource_detection"]["detectors"] == ["env", detector]


def test_eks_is_refused_with_our_distribution_pointing_to_ec2_and_the_contrib_image() -> None:
    """otelcol-kvtrace leaves the EC2 API client out (tools/otelcol/stubs/ec2): eks's lookup of
    its instance where the metadata service is closed to pods would find part of what it
    should; ec2 reads the metadata service and runs in our image."""
    with pytest.raises(SpecError) as raised:
        render_pipeline(tp(resourceDetection={"detectors": ["env", "system", "eks"]}))
    assert raised.value.field == "spec.collector.resourceDetection.detectors[2]"
    message = str(raised.value)
    assert "EC2 API" in message and "ec2 reads the instance metadata service" in message
    assert "set spec.collector.image to otel/opentelemetry-collector-contrib:0.161.0" in message
    ec2 = render_collector_config(tp(resourceDetection={"detectors": ["env", "system", "ec2"]}))
    assert ec2["processors"]["resource_detection"]["detectors"] == ["env", "system", "ec2"]
    assert "ec2" not in ec2["processors"]["resource_detection"]  # no tags: no EC2 API call


def test_k8snode_is_k8s_apis_older_name_listed_once() -> None:
    assert settings(resourceDetection={"detectors": ["k8s_api"]}).detectors == ("k8s_api",)
    both = {"resourceDetection": {"detectors": ["k8snode", "k8s_api"]}}
    with pytest.raises(SpecError) as raised:
        render_pipeline(tp(**both))
    assert raised.value.field == "spec.collector.resourceDetection.detectors"
    assert any("same detector" in error for error in schema_errors(**both))


def test_unknown_detectors_are_refused_naming_the_field() -> None:
    collector = {"resourceDetection": {"detectors": ["env", "docker"]}}
    errors = schema_errors(**collector)
    assert any(
        e.startswith('spec.collector.resourceDetection.detectors[1]: Unsupported value: "docker"')
        for e in errors
    ), errors
    with pytest.raises(SpecError) as raised:
        render_pipeline(tp(**collector))
    assert raised.value.field == "spec.collector.resourceDetection.detectors[1]"


def test_override_and_timeout_reach_the_processor() -> None:
    collector = {"resourceDetection": {"override": True, "timeout": "2s"}}
    detection = render_collector_config(tp(**collector))["processors"]["resource_detection"]
    assert (detection["override"], detection["timeout"]) == (True, "2s")
    assert any(
        "timeout must be at least 100ms" in e
        for e in schema_errors(resourceDetection={"timeout": "1ms"})
    )
    with pytest.raises(SpecError) as raised:
        render_pipeline(tp(resourceDetection={"timeout": "1ms"}))
    assert raised.value.field == "spec.collector.resourceDetection.timeout"


def test_eks_alone_still_gets_a_token_and_its_node_name() -> None:
    """eks builds an in-cluster client at start (the collector fails without a token)."""
    collector = {
        "image": CONTRIB,  # eks is refused with our distribution
        "resourceDetection": {"detectors": ["eks"]},
        "kubernetesAttributes": {"enabled": False},
    }
    objects = render_pipeline(tp(**collector))
    pod = one(objects, "Deployment", "traces-collector")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert [e["name"] for e in pod["containers"][0]["env"]] == ["K8S_NODE_NAME"]
    assert not [
        o
        for o in objects
        if o["kind"] in ("Role", "RoleBinding") and o["metadata"]["name"] == "traces-collector"
    ]


def test_without_api_calls_no_token_no_role() -> None:
    collector = {
        "resourceDetection": {"detectors": ["env", "system"]},
        "kubernetesAttributes": {"enabled": False},
    }
    objects = render_pipeline(tp(**collector))
    assert not [
        o
        for o in objects
        if o["kind"] in ("Role", "RoleBinding") and o["metadata"]["name"] == "traces-collector"
    ]
    assert (
        one(objects, "ServiceAccount", "traces-collector")["automountServiceAccountToken"] is False
    )
    pod = one(objects, "Deployment", "traces-collector")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "K8S_NODE_NAME" not in [e["name"] for e in pod["containers"][0].get("env") or []]
    assert "k8s_attributes" not in render_collector_config(tp(**collector))["processors"]


def test_k8s_attributes_alone_needs_no_node_name() -> None:
    collector = {"resourceDetection": {"detectors": ["env"]}}
    objects = render_pipeline(tp(**collector))
    pod = one(objects, "Deployment", "traces-collector")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert "K8S_NODE_NAME" not in [e["name"] for e in pod["containers"][0].get("env") or []]
    assert one(objects, "Role", "traces-collector")


def test_labels_and_annotations_are_typed_and_the_role_follows_their_sources() -> None:
    attributes = {
        "labels": [
            {"key": "app.kubernetes.io/version", "tagName": "app.version"},
            {"key": "team", "tagName": "team", "from": "deployment"},
        ],
        "annotations": [{"key": "owner", "tagName": "owner", "from": "statefulset"}],
    }
    config = render_collector_config(tp(kubernetesAttributes=attributes))
    extract = config["processors"]["k8s_attributes"]["extract"]
    assert extract["labels"] == [
        {"tag_name": "app.version", "key": "app.kubernetes.io/version", "from": "pod"},
        {"tag_name": "team", "key": "team", "from": "deployment"},
    ]
    assert extract["annotations"] == [{"tag_name": "owner", "key": "owner", "from": "statefulset"}]
    role = one(render_pipeline(tp(kubernetesAttributes=attributes)), "Role", "traces-collector")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "statefulsets"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    assert schema_errors(kubernetesAttributes=attributes) == []


def test_bad_labels_are_refused_naming_the_field() -> None:
    missing = {"labels": [{"key": "team"}]}
    assert any(
        "spec.collector.kubernetesAttributes.labels[0].tagName: Required value" in e
        for e in schema_errors(kubernetesAttributes=missing)
    )
    with pytest.raises(SpecError) as raised:
        render_pipeline(tp(kubernetesAttributes=missing))
    assert raised.value.field == "spec.collector.kubernetesAttributes.labels[0].tagName"
    bad_key = {"labels": [{"key": "no spaces", "tagName": "t"}]}
    assert any(
        e.startswith("spec.collector.kubernetesAttributes.labels[0].key:")
        for e in schema_errors(kubernetesAttributes=bad_key)
    )


def test_namespace_labels_need_scope_cluster() -> None:
    namespaced = {"labels": [{"key": "team", "tagName": "team", "from": "namespace"}]}
    assert any(
        "they need scope cluster" in e for e in schema_errors(kubernetesAttributes=namespaced)
    )
    with pytest.raises(SpecError) as raised:
        render_pipeline(tp(kubernetesAttributes=namespaced))
    assert raised.value.field == "spec.collector.kubernetesAttributes.labels[0].from"
    cluster = {**namespaced, "scope": "cluster"}
    assert schema_errors(kubernetesAttributes=cluster) == []
    env = settings(kubernetesAttributes=cluster)
    assert environment.role_rules(env) == []
    assert environment.cluster_rules(env) == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
    ]


def test_scope_cluster_renders_no_role_and_no_filter() -> None:
    collector = {"kubernetesAttributes": {"scope": "cluster"}}
    objects = render_pipeline(tp(**collector))
    assert not [
        o
        for o in objects
        if o["kind"] in ("Role", "RoleBinding") and o["metadata"]["name"] == "traces-collector"
    ]
    config = yaml.safe_load(one(objects, "ConfigMap", "traces-collector")["data"]["config.yaml"])
    assert "filter" not in config["processors"]["k8s_attributes"]
    assert environment.cluster_rules(settings(**collector))[1] == {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch"],
    }


@pytest.mark.parametrize(
    ("detectors", "attributes"),
    list(itertools.product([["env"], ["env", "k8snode"]], [True, False])),
)
def test_cluster_rules_are_what_the_admin_grants(detectors: list[str], attributes: bool) -> None:
    env = settings(
        resourceDetection={"detectors": detectors}, kubernetesAttributes={"enabled": attributes}
    )
    rules = environment.cluster_rules(env)
    assert environment.cluster_rules(settings(resourceDetection={"detectors": ["eks"]})) == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}
    ]
    assert rules == (
        [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
        if "k8snode" in detectors
        else []
    )


@pytest.mark.parametrize("replicas", [1, 3])
def test_the_dataplane_harness_leaves_out_only_what_needs_kubernetes(replicas: int) -> None:
    """Collectors run as plain processes (no API server, no node) drop k8s_attributes and the
    k8s_api detector, nothing else; the controlplane tier runs the rendered config as it is."""
    from kvtrace.devstack.backends import prepare_config, without_kubernetes

    resource = tp(replicas=replicas)
    tiers = ["loadbalancer", "sampling"] if replicas > 1 else ["sampling"]
    for tier in tiers:
        rendered = render_collector_config(resource, tier)
        local = without_kubernetes(copy.deepcopy(rendered))
        assert "k8s_attributes" not in local["processors"]
        assert processors(local) == [p for p in processors(rendered) if p != "k8s_attributes"]
        if "resource_detection" in rendered["processors"]:
            detection = local["processors"]["resource_detection"]
            assert detection["detectors"] == ["env", "system"] and "k8s_api" not in detection
        prepared, _ = prepare_config(rendered)
        assert "k8s_attributes" not in processors(prepared)
        assert "k8s_attributes" in processors(render_collector_config(resource, tiers[0]))


def test_the_renderers_enums_are_the_crds() -> None:
    """kvtrace render without the strict check refuses what the API server would."""
    schema = crds.schemas()[("kvtrace.dev/v1alpha1", "TracingPipeline")]
    collector = schema["properties"]["spec"]["properties"]["collector"]["properties"]
    detectors = collector["resourceDetection"]["properties"]["detectors"]["items"]["enum"]
    assert sorted(detectors) == sorted(environment.DETECTORS)
    attributes = collector["kubernetesAttributes"]["properties"]
    assert attributes["metadata"]["items"]["enum"] == list(environment.METADATA)
    assert attributes["scope"]["enum"] == list(environment.SCOPES)
    assert attributes["labels"]["items"]["properties"]["from"]["enum"] == list(environment.SOURCES)
    with pytest.raises(SpecError) as raised:
        render_pipeline(tp(kubernetesAttributes={"metadata": ["k8s.pod.name", "k8s.node.uid"]}))
    assert raised.value.field == "spec.collector.kubernetesAttributes.metadata[1]"
