"""Assertions about an applied example, shared by the controlplane tier (local cluster), the
containers tier (tests/containers: the pods as containers of our images) and the kind tier
(tests/e2e): each passes a ``kubectl(*args, input=None, check=True, timeout=60)`` callable
bound to its cluster. The bench Pod, its result, the traces it leaves and the rolling of the
members on a configuration change are checked the same way in the containers and kind tiers."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from examples_lib import documents

from kvtrace.devstack.pytest_plugin import poll
from kvtrace.shared.jaeger_client import JaegerClient
from kvtrace_operator.render import podspec, render_all
from kvtrace_operator.render.images import KVNODE_IMAGE

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
OWNED_KINDS = ("KVCluster", "TracingPipeline")


def resources(folder: Path) -> list[tuple[str, str]]:
    """(kind, name) of every custom resource of the example."""
    return [(doc["kind"], doc["metadata"]["name"]) for doc in documents(folder)]


def apply_example(kubectl: Kubectl, namespace: str, folder: Path) -> None:
    """Server-side dry run first (the API server validates, nothing is stored), then apply."""
    dry = kubectl("-n", namespace, "apply", "--dry-run=server", "-f", str(folder), "-o", "name")
    expected = sorted(f"{kind.lower()}.kvtrace.dev/{name}" for kind, name in resources(folder))
    assert sorted(dry.stdout.split()) == expected, dry.stdout
    assert kubectl("-n", namespace, "get", "kvtrace", "-o", "name").stdout.strip() == "", (
        "a server-side dry run stored something"
    )
    kubectl("-n", namespace, "apply", "-f", str(folder))


def get_json(kubectl: Kubectl, namespace: str, *refs: str) -> list[dict[str, Any]]:
    proc = kubectl("-n", namespace, "get", *refs, "-o", "json")
    data = json.loads(proc.stdout)
    items: list[dict[str, Any]] = data["items"] if data.get("kind") == "List" else [data]
    return items


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def not_ready(kubectl: Kubectl, namespace: str, folder: Path) -> list[str]:
    """Resources of the example whose Ready condition is not True for their generation."""
    refs = [f"{kind.lower()}.kvtrace.dev/{name}" for kind, name in resources(folder)]
    pending = []
    for obj in get_json(kubectl, namespace, *refs):
        ready = condition(obj, "Ready") or {}
        status = obj.get("status") or {}
        if (
            ready.get("status") != "True"
            or status.get("observedGeneration") != obj["metadata"]["generation"]
        ):
            pending.append(
                f"{obj['kind']}/{obj['metadata']['name']}: phase={status.get('phase')} "
                f"Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})"
            )
    return pending


def wait_ready(kubectl: Kubectl, namespace: str, folder: Path, timeout: float = 180) -> None:
    last: list[list[str]] = [[]]

    def done() -> bool:
        last[0] = not_ready(kubectl, namespace, folder)
        return not last[0]

    try:
        poll(done, timeout=timeout, interval=1.0)
    except AssertionError:
        raise AssertionError(f"{folder.name} not Ready after {timeout:.0f}s: {last[0]}") from None


def expected_children(folder: Path, namespace: str) -> list[dict[str, Any]]:
    """What the operator must have created: the renderers' output for the example."""
    docs = [
        {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}
        for doc in documents(folder)
    ]
    rendered: list[dict[str, Any]] = render_all(docs)
    return rendered


def kubectl_ref(obj: dict[str, Any]) -> str:
    group = obj["apiVersion"].rpartition("/")[0]
    kind = obj["kind"].lower()
    return (
        f"{kind}.{group}/{obj['metadata']['name']}"
        if group
        else f"{kind}/{obj['metadata']['name']}"
    )


def assert_children(kubectl: Kubectl, namespace: str, folder: Path) -> None:
    """Every rendered child exists, labelled as ours and owned by its custom resource."""
    children = expected_children(folder, namespace)
    assert children
    found = {
        (obj["kind"], obj["metadata"]["name"]): obj
        for obj in get_json(kubectl, namespace, *[kubectl_ref(c) for c in children])
    }
    for child in children:
        key = (child["kind"], child["metadata"]["name"])
        assert key in found, f"{folder.name}: {key} was not created"
        meta = found[key]["metadata"]
        assert meta["labels"].get("app.kubernetes.io/managed-by") == "kvtrace-operator", key
        assert meta["labels"].get("app.kubernetes.io/part-of") == "kvtrace", key
        owners = {(ref["kind"], ref["name"]) for ref in meta.get("ownerReferences") or ()}
        assert owners & {(kind, name) for kind, name in resources(folder) if kind in OWNED_KINDS}, (
            f"{key} has no owner reference to the example's resources: {owners}"
        )


def assert_kv_traces(jaeger: Any, service: str, raw_key_prefix: str) -> None:
    """Jaeger (a ``kvtrace.shared.jaeger_client.JaegerClient``) holds traces of ``service``
    whose spans carry the kvstore.* attributes and never a raw key (keys written with
    ``raw_key_prefix``; docs/design.md section 4)."""
    traces = jaeger.find_traces(service, limit=20)
    assert traces, f"no traces of {service} in Jaeger"
    spans = [span for trace in traces for span in trace.spans]
    assert any("kvstore.operation" in span.attributes for span in spans), (
        f"no span of {service} carries kvstore.operation"
    )
    raw = [
        span.name
        for span in spans
        if any(str(value).startswith(raw_key_prefix) for value in span.attributes.values())
    ]
    assert not raw, f"raw keys reached Jaeger in spans {raw[:5]}"


# ------------------------------------------------------------------ load and traces
BENCH_KEY_PREFIX = "e2e-raw-key-"


def bench_pod(
    namespace: str,
    endpoint: str,
    *,
    cluster: str,
    ops: int = 2000,
    seconds: int = 20,
    name: str = "bench",
) -> dict[str, Any]:
    """A one-shot Pod of the KV node image, with the operator's own security contexts, that
    runs ``kvtrace bench`` against ``endpoint`` (the KV client Service) and prints JSON; with
    KVCluster ``cluster``'s CA bundle and generated client token mounted (its TLS and tokens
    are on by default)."""
    secrets = [
        ("kv-trust", f"{cluster}-kv-tls-trust", "ca.crt"),
        ("kv-token", f"{cluster}-kv-client-token", "token"),
    ]
    command = [
        "kvtrace",
        "bench",
        "--json-only",
        "--endpoint",
        endpoint,
        "--duration",
        str(seconds),
        "--ops",
        str(ops),
        "--clients",
        "4",
        "--key-prefix",
        BENCH_KEY_PREFIX,
        "--ca-file",
        "/etc/kv-trust/ca.crt",
        "--token-file",
        "/etc/kv-token/token",
    ]
    mounts = [
        podspec.tmp_mount(),
        *({"name": name, "mountPath": f"/etc/{name}", "readOnly": True} for name, _, _ in secrets),
    ]
    volumes = [
        podspec.tmp_volume(),
        *(
            {"name": name, "secret": {"secretName": secret, "items": [{"key": key, "path": key}]}}
            for name, secret, key in secrets
        ),
    ]
    container = {
        "name": "bench",
        "image": KVNODE_IMAGE,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": podspec.container_security_context(),
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": podspec.pod_security_context(),
            "containers": [container],
            "volumes": volumes,
        },
    }


def assert_bench_succeeded(exit_code: int | None, logs: str) -> dict[str, Any]:
    """The bench Pod's result: it exited 0, did operations, and none failed."""
    assert exit_code == 0, f"kvtrace bench failed in the cluster ({exit_code}):\n{logs[-3000:]}"
    result: dict[str, Any] = json.loads(logs.strip().splitlines()[-1])
    assert result["ops"] > 0 and result["errors"] == 0, result
    return result


def pipeline_jaeger(
    kubectl: Kubectl, namespace: str, pipeline: str, connect_to: Callable[[str, int], str]
) -> Any:
    """A client of the pipeline's Jaeger query API as its status reports it (https by default,
    verified with the pipeline's trust bundle for the query Service's name), reached at
    ``connect_to(host, port)`` (an endpoint-map address, a port-forward)."""
    status = get_json(kubectl, namespace, f"tracingpipeline.kvtrace.dev/{pipeline}")[0]["status"]
    query = urllib.parse.urlsplit(status["endpoints"]["jaegerQuery"])
    assert query.hostname and query.port, status["endpoints"]
    ca_pem = None
    if query.scheme == "https":
        trust = get_json(kubectl, namespace, f"secret/{pipeline}-tls-trust")[0]
        ca_pem = base64.b64decode(trust["data"]["ca.crt"]).decode()
    return JaegerClient(
        f"{query.scheme}://{connect_to(query.hostname, query.port)}",
        timeout=5,
        ca_pem=ca_pem,
        server_hostname=query.hostname,
    )


def wait_kv_traces(jaeger: Any, service: str, timeout: float = 120) -> None:
    """The bench's traces of ``service`` reach Jaeger, with kvstore.* attributes and no raw key."""
    poll(
        lambda: service in jaeger.services(),
        timeout=timeout,
        interval=2,
        message=f"service {service} in Jaeger",
    )
    assert_kv_traces(jaeger, service, BENCH_KEY_PREFIX)


# ------------------------------------------------------------------ configuration changes
CHECKSUM = "kvtrace.dev/config-checksum"


def member_uids(kubectl: Kubectl, namespace: str, cluster: str) -> dict[str, str]:
    """``{pod name: uid}`` of KVCluster ``cluster``'s member pods (not being deleted)."""
    selector = f"app.kubernetes.io/instance={cluster},app.kubernetes.io/component=kvnode"
    return {
        pod["metadata"]["name"]: pod["metadata"]["uid"]
        for pod in get_json(kubectl, namespace, "pods", "-l", selector)
        if not pod["metadata"].get("deletionTimestamp")
    }


def template_checksum(kubectl: Kubectl, namespace: str, cluster: str) -> str:
    statefulset = get_json(kubectl, namespace, f"statefulset.apps/{cluster}")[0]
    return str(statefulset["spec"]["template"]["metadata"]["annotations"][CHECKSUM])


def change_config_and_wait_rolled(
    kubectl: Kubectl, namespace: str, cluster: str, timeout: float = 300
) -> dict[str, str]:
    """Change KVCluster ``cluster``'s node settings (``spec.antiEntropy.interval``): its
    ConfigMap and the pod template's config checksum change, every member pod is replaced (a
    new uid each, as many as before) and the cluster is Ready again for the new generation.
    Returns the new members' ``{pod name: uid}``."""
    ref = f"kvcluster.kvtrace.dev/{cluster}"
    before = member_uids(kubectl, namespace, cluster)
    assert before, f"{cluster} has no member pods"
    checksum = template_checksum(kubectl, namespace, cluster)
    spec = get_json(kubectl, namespace, ref)[0]["spec"]
    interval = "7m" if (spec.get("antiEntropy") or {}).get("interval") != "7m" else "9m"
    patch = json.dumps({"spec": {"antiEntropy": {"interval": interval}}})
    kubectl("-n", namespace, "patch", ref, "--type=merge", "-p", patch)
    poll(
        lambda: template_checksum(kubectl, namespace, cluster) != checksum,
        timeout=60,
        message=f"{cluster}'s pod template checksum to change",
    )

    def rolled() -> dict[str, str] | None:
        now = member_uids(kubectl, namespace, cluster)
        if set(now) != set(before) or set(now.values()) & set(before.values()):
            return None
        (kvcluster,) = get_json(kubectl, namespace, ref)
        ready = condition(kvcluster, "Ready") or {}
        observed = (kvcluster.get("status") or {}).get("observedGeneration")
        current = ready.get("status") == "True" and observed == kvcluster["metadata"]["generation"]
        return now if current else None

    after: dict[str, str] = poll(
        rolled, timeout=timeout, interval=2, message=f"every member of {cluster} replaced, Ready"
    )
    return after
