"""Environment detection with the real collector (render/environment.py, docs/crds.md).

1. Every resource detector combination the operator renders passes the real ``otelcol
   validate``, run in a network namespace of its own with nothing but a loopback interface
   (``unshare -n``), so no cloud detector can reach a metadata address even if it tried.
2. Against the local cluster's real API server: the operator applies a pipeline, the pod
   runner runs its collector with a kubeconfig carrying the collector ServiceAccount's own
   token (so the Role the operator rendered, and the node grant the cluster admin gives, are
   what it may read), and a process behind a KWOK pod of a Deployment sends a span that names
   only its service and its pod's uid (the downward API): the span reaches Jaeger with
   ``k8s.node.name``, ``k8s.namespace.name``, ``k8s.pod.name`` and ``k8s.deployment.name``
   added by k8s_attributes. A span from outside any pod gets the collector's own node from the
   k8snode detector, which asked the API server for it.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.canary import canary_request, new_ids, post
from kvtrace.devstack import tools
from kvtrace.devstack.pytest_plugin import require_binaries
from kvtrace.shared.endpoints import resolve_url
from kvtrace.shared.jaeger_client import JaegerClient
from kvtrace_operator.render import environment, render_collector_config
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.controlplane

TIMEOUT = 120.0
CONTRIB = "otel/opentelemetry-collector-contrib:0.161.0"
PROGRAMS = {"otelcol": "otelcol-kvtrace", "jaeger": "jaeger"}
APP_SERVICE = "env-detect-app"
# Every detector alone, none, the defaults with each cloud, and a few pairs.
CLOUD = sorted(environment.CLOUD_PROVIDERS)
COMBINATIONS = (
    [[d] for d in environment.DETECTORS]
    + [[]]
    + [["env", "system", "k8snode", cloud] for cloud in CLOUD]
    + [["eks", "ec2"], ["aks", "azure"], ["gcp", "env", "k8s_api"]]
)


def tp(name: str = "traces", namespace: str = "store", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# A pod's view, made in private mount and network namespaces: the ServiceAccount files at
# their fixed path (on a tmpfs over /run, seen by nothing else), KUBERNETES_SERVICE_* naming a
# loopback port, and no network but a loopback interface that is down.
POD_SANDBOX = """
mount -t tmpfs tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
printf unused > /run/secrets/kubernetes.io/serviceaccount/token
printf store > /run/secrets/kubernetes.io/serviceaccount/namespace
exec "$@"
"""


def isolated_validate(config: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """``otelcol validate`` as in a collector pod (in-cluster ServiceAccount files and
    variables, its node's name), where no address but loopback exists: validation builds every
    component, clients included, and proves nothing was needed from a network."""
    require_binaries("otelcol-kvtrace")
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "-m", "true"], check=False).returncode:
        pytest.fail("unshare -n -m (util-linux, as root) is needed to isolate the validation")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    binary = str(tools.binary("otelcol-kvtrace"))
    return subprocess.run(
        [
            unshare,
            "-n",
            "-m",
            "sh",
            "-c",
            POD_SANDBOX,
            "sh",
            binary,
            "validate",
            f"--config={path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "K8S_NODE_NAME": "validate-node",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": "1",
        },
    )


@pytest.mark.parametrize(
    ("detectors", "replicas"),
    [(d, 1) for d in COMBINATIONS] + [(["env", "system", "k8snode", "eks"], 3)],
    ids=[f"{'-'.join(d) or 'none'}" for d in COMBINATIONS] + ["two-tiers"],
)
def test_every_detector_combination_passes_otelcol_validate(
    detectors: list[str], replicas: int, tmp_path: Path
) -> None:
    contrib_only = set(detectors) & set(environment.CONTRIB_ONLY_DETECTORS)
    collector: dict[str, Any] = {
        "replicas": replicas,
        "resourceDetection": {"detectors": detectors},
    }
    if contrib_only:  # refused with our image (test_render_collector_environment.py)
        collector["image"] = CONTRIB
    pipeline = tp(collector=collector)
    tiers = ["loadbalancer", "sampling"] if replicas > 1 else ["sampling"]
    for tier in tiers:
        config = render_collector_config(pipeline, tier)
        proc = isolated_validate(config, tmp_path / tier)
        assert proc.returncode == 0, f"{tier}: {proc.stderr}\n{yaml.safe_dump(config)}"


def test_labels_annotations_and_scope_cluster_pass_otelcol_validate(tmp_path: Path) -> None:
    attributes = {
        "scope": "cluster",
        "metadata": ["k8s.namespace.name", "k8s.pod.name", "k8s.pod.ip", "service.name"],
        "labels": [
            {"key": "app.kubernetes.io/version", "tagName": "app.version"},
            {"key": "team", "tagName": "team", "from": "namespace"},
        ],
        "annotations": [{"key": "owner", "tagName": "owner", "from": "deployment"}],
    }
    config = render_collector_config(tp(collector={"kubernetesAttributes": attributes}))
    proc = isolated_validate(config, tmp_path)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- the live test

APP = """
import json, os, time, urllib.request
endpoint = os.environ["COLLECTOR"] + "/v1/traces"
for index in range(120):  # bounded: at most 120 spans in about two minutes
    now = time.time_ns()
    body = {"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": os.environ["SERVICE"]}},
            {"key": "k8s.pod.uid", "value": {"stringValue": os.environ["POD_UID"]}},
        ]},
        "scopeSpans": [{"scope": {"name": "app"}, "spans": [{
            "traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(),
            "name": "work", "kind": 2, "startTimeUnixNano": str(now - 1000000),
            "endTimeUnixNano": str(now), "status": {"code": 0},
        }]}],
    }]}
    request = urllib.request.Request(endpoint, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=5).read()
    except OSError as exc:
        print("send failed:", exc, flush=True)
    time.sleep(1)
"""


def app_deployment(namespace: str) -> dict[str, Any]:
    env = [
        {"name": "SERVICE", "value": APP_SERVICE},
        {"name": "COLLECTOR", "value": f"http://traces-collector.{namespace}.svc:4318"},
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "app",
                            "image": "python:3.11-slim",
                            "command": ["python3", "-c", APP],
                            "env": env,
                        }
                    ],
                },
            },
        },
    }


def node_reader(namespace: str) -> list[dict[str, Any]]:
    """What docs/crds.md asks the cluster admin to grant for the k8snode detector."""
    name = f"kvtrace-collector-node-reader-{namespace}"
    pipeline = tp(namespace=namespace)
    rbac = "rbac.authorization.k8s.io"
    return [
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            # The default pipeline's: get on nodes (its k8s_attributes reads its namespace).
            "rules": environment.cluster_rules(
                environment.environment(pipeline, parse_pipeline(pipeline["spec"]))
            ),
        },
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": name},
            "subjects": [
                {"kind": "ServiceAccount", "name": "traces-collector", "namespace": namespace}
            ],
        },
    ]


@pytest.fixture
def granted_nodes(local_cluster: Any, namespace: str, tmp_path: Path) -> Iterator[None]:
    path = tmp_path / "node-reader.yaml"
    path.write_text(yaml.safe_dump_all(node_reader(namespace)))
    local_cluster.kubectl("apply", "-f", str(path))
    try:
        yield
    finally:
        local_cluster.kubectl("delete", "--ignore-not-found", "-f", str(path), check=False)


def service_account_kubeconfig(local_cluster: Any, namespace: str, path: Path) -> Path:
    """The local cluster's kubeconfig with the collector ServiceAccount's own token: what the
    collector may read is what its RBAC grants, as in a pod."""
    token = local_cluster.kubectl(
        "-n", namespace, "create", "token", "traces-collector", "--duration=3600s"
    ).stdout.strip()
    config = copy.deepcopy(yaml.safe_load(Path(local_cluster.kubeconfig).read_text()))
    context = config["contexts"][0]["context"]
    config["users"] = [{"name": "collector", "user": {"token": token}}]
    context["user"] = "collector"
    config["contexts"] = [{"name": "collector", "context": context}]
    config["current-context"] = "collector"
    path.write_text(yaml.safe_dump(config))
    return path


def resources_of(client: JaegerClient, service: str) -> list[dict[str, Any]]:
    return [span.resource for trace in client.find_traces(service) for span in trace.spans]


def test_spans_of_a_deployments_pod_get_its_kubernetes_metadata_from_the_collector(
    operator: Any,
    kube_ns: Any,
    local_cluster: Any,
    pod_runner: Any,
    endpoint_map: Any,
    poll: Any,
    granted_nodes: None,
    tmp_path: Path,
) -> None:
    ns = kube_ns.namespace
    kube_ns.apply(
        tp(
            namespace=ns,
            sampling={"mode": "development"},
            security={"auth": {"enabled": False}, "tls": {"enabled": False}},
        )
    )
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True"),
        timeout=TIMEOUT,
        message="pipeline Ready",
    )
    role = kube_ns.get("role", "traces-collector")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]

    def command(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        return [str(tools.binary(PROGRAMS[container["name"]]))]

    pod_runner("app.kubernetes.io/component=jaeger", resolve_command=command)
    poll(
        lambda: any(key.startswith("traces-jaeger-otlp.") for key in endpoint_map.entries()),
        timeout=TIMEOUT,
        message="Jaeger in the endpoint map",
    )
    kubeconfig = service_account_kubeconfig(local_cluster, ns, tmp_path / "collector-kubeconfig")
    collector = pod_runner(
        "app.kubernetes.io/component=collector",
        resolve_command=command,
        env={"KUBECONFIG": str(kubeconfig)},
    )
    collector.wait_running(1, timeout=TIMEOUT)
    [collector_pod] = kube_ns.list("pods", "app.kubernetes.io/component=collector")
    collector_node = collector_pod["spec"]["nodeName"]

    kube_ns.apply(app_deployment(ns))
    app = pod_runner("app=web")
    app_pod = poll(
        lambda: next(iter(kube_ns.list("pods", "app=web")), None) if app.pods() else None,
        timeout=TIMEOUT,
        message="the web Deployment's pod runs its process",
    )
    query = kube_ns.get("tracingpipeline", "traces")["status"]["endpoints"]["jaegerQuery"]
    jaeger = JaegerClient(resolve_url(query, endpoint_map.path), timeout=5)

    def enriched() -> dict[str, Any] | None:
        return next(
            (r for r in resources_of(jaeger, APP_SERVICE) if "k8s.deployment.name" in r), None
        )

    try:
        resource = poll(enriched, timeout=TIMEOUT, interval=2, message="an enriched app span")
    except AssertionError:
        raise AssertionError(
            f"no enriched span; collector log:\n{collector.logs(collector_pod['metadata']['name'])}"
            f"\napp log:\n{app.logs(app_pod['metadata']['name'])}"
        ) from None
    owner = app_pod["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ReplicaSet" and owner["name"].startswith("web-")
    assert resource["k8s.deployment.name"] == "web", resource
    assert resource["k8s.namespace.name"] == ns
    assert resource["k8s.pod.name"] == app_pod["metadata"]["name"]
    assert resource["k8s.node.name"] == app_pod["spec"]["nodeName"]
    assert resource["k8s.replicaset.name"] == owner["name"]
    # What the app sent, and nothing of it is what the collector added.
    sent = app_pod["spec"]["containers"][0]["env"]
    assert not any(e.get("value", "").count("k8s.") for e in sent)
    # system ran too (host.name of the collector's own pod, os.type); override false kept
    # the app's own attributes.
    assert resource["os.type"] == "linux"
    assert resource["service.name"] == APP_SERVICE

    # A span from no pod: the k8snode detector's answer, the collector's own node.
    trace_id, span_id = new_ids()
    now = time.time_ns()
    status, body = post(
        resolve_url(
            kube_ns.get("tracingpipeline", "traces")["status"]["endpoints"]["otlpHttp"],
            endpoint_map.path,
        ),
        canary_request(
            trace_id,
            span_id,
            start_ns=now - 1_000_000,
            end_ns=now,
            service="env-detect-outside",
            name="outside",
            attributes={},
        ),
    )
    assert status == 200, body
    outside = poll(
        lambda: jaeger.trace(trace_id), timeout=TIMEOUT, interval=1, message="the outside span"
    )
    outside_resource = outside.spans[0].resource
    assert outside_resource["k8s.node.name"] == collector_node, outside_resource
    assert "k8s.pod.name" not in outside_resource and "k8s.deployment.name" not in outside_resource
