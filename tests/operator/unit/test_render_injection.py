"""render/injection.py: the pod mutation of auto-instrumentation, over many pod
shapes: what every container gets, what the pod's own settings keep, agents, idempotence and
determinism, and the annotation errors (named by their annotation)."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from kvtrace_operator.render import SpecError
from kvtrace_operator.render import injection as inj
from kvtrace_operator.render.images import DEFAULT_IMAGES, JAVA_AGENT_IMAGE, PYTHON_AGENT_IMAGE
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit


def pipeline(name: str = "traces", namespace: str = "obs", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": name, "namespace": namespace, "uid": "p-uid"},
        "spec": spec,
    }


PLAIN = {"security": {"auth": {"enabled": False}, "tls": {"enabled": False}}}


def pod(
    annotations: dict[str, str] | None = None,
    *,
    owner: tuple[str, str] | None = ("ReplicaSet", "web-5d9f"),
    containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": "shop",
        "generateName": "web-5d9f-",
        "labels": {"app": "web", "pod-template-hash": "5d9f"},
        "annotations": {"kvtrace.dev/inject": "obs/traces", **(annotations or {})},
    }
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": "o-uid",
                "controller": True,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": containers or [{"name": "app", "image": "shop:1"}], **spec},
    }


def injected(p: dict[str, Any], pl: dict[str, Any] | None = None) -> dict[str, Any]:
    request = inj.parse_request(p["metadata"]["annotations"], p["metadata"]["namespace"])
    assert request is not None
    return inj.inject(p, pl or pipeline(), request)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueFrom"))
        for item in container.get("env") or []
    }


SHAPES = {
    "deployment": pod(),
    "bare pod": pod(owner=None),
    "statefulset": pod(owner=("StatefulSet", "db")),
    "daemonset": pod(owner=("DaemonSet", "agent")),
    "job": pod(owner=("Job", "migrate")),
    "two containers": pod(
        containers=[{"name": "app", "image": "a"}, {"name": "side", "image": "b"}]
    ),
    "own env and volumes": pod(
        containers=[
            {
                "name": "app",
                "image": "a",
                "env": [
                    {"name": "OTEL_SERVICE_NAME", "value": "checkout"},
                    {"name": "X", "value": "1"},
                ],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        volumes=[{"name": "data", "emptyDir": {}}],
    ),
    "python": pod({"kvtrace.dev/inject-python": "true"}),
    "java with own options": pod(
        {"kvtrace.dev/inject-java": "true"},
        containers=[
            {
                "name": "app",
                "image": "a",
                "env": [{"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx256m"}],
            }
        ],
    ),
    "both agents, existing init": pod(
        {"kvtrace.dev/inject-python": "true", "kvtrace.dev/inject-java": "true"},
        initContainers=[{"name": "setup", "image": "busybox"}],
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
class TestShapes:
    def test_idempotent_and_deterministic(self, shape: str) -> None:
        once = injected(SHAPES[shape])
        assert injected(once) == once
        assert json.dumps(injected(copy.deepcopy(SHAPES[shape])), sort_keys=True) == json.dumps(
            once, sort_keys=True
        )
        assert SHAPES[shape] != once  # and the input is not modified in place
        assert "kvtrace.dev/injected" not in SHAPES[shape]["metadata"]["annotations"]

    def test_every_container_gets_the_pipeline(self, shape: str) -> None:
        out = injected(SHAPES[shape])
        assert out["metadata"]["annotations"]["kvtrace.dev/injected"] == "obs/traces"
        for container in out["spec"]["containers"]:
            env = env_of(container)
            assert (
                env["OTEL_EXPORTER_OTLP_ENDPOINT"]
                == "https://traces-collector.obs.svc.cluster.local:4318"
            )
            assert env["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
            assert env["OTEL_PROPAGATORS"] == "tracecontext,baggage"
            assert env["KVTRACE_OTLP_TOKEN"]["secretKeyRef"]["key"] == "token"
            assert (
                env["OTEL_EXPORTER_OTLP_HEADERS"] == "authorization=Bearer%20$(KVTRACE_OTLP_TOKEN)"
            )
            assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"] == "/etc/kvtrace-telemetry/ca.crt"
            assert {
                "name": "kvtrace-telemetry-ca",
                "mountPath": "/etc/kvtrace-telemetry",
                "readOnly": True,
            } in container["volumeMounts"]
            # $(VAR) references only variables defined earlier in the list (kubelet semantics)
            names = [item["name"] for item in container["env"]]
            for index, item in enumerate(container["env"]):
                for ref in ("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "KVTRACE_OTLP_TOKEN"):
                    if f"$({ref})" in str(item.get("value", "")):
                        assert ref in names[:index]
        assert any(
            v.get("secret", {}).get("secretName", "").endswith("-otlp-workload")
            for v in out["spec"]["volumes"]
        )


def test_workload_names_service_name_and_secret() -> None:
    cases = {
        "deployment": ("Deployment", "web"),
        "bare pod": ("Pod", "web-5d9f"),
        "statefulset": ("StatefulSet", "db"),
        "daemonset": ("DaemonSet", "agent"),
        "job": ("Job", "migrate"),
    }
    for shape, (kind, name) in cases.items():
        workload = inj.owning_workload(SHAPES[shape])
        assert (workload.kind, workload.name) == (kind, name)
        env = env_of(injected(SHAPES[shape])["spec"]["containers"][0])
        assert env["OTEL_SERVICE_NAME"] == name
        assert (
            env["KVTRACE_OTLP_TOKEN"]["secretKeyRef"]["name"]
            == f"{name}-{kind.lower()}-otlp-workload"
        )
        attributes = env["OTEL_RESOURCE_ATTRIBUTES"]
        assert "k8s.namespace.name=shop" in attributes
        assert "k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)" in attributes
        assert (f"k8s.{kind.lower()}.name={name}" in attributes) == (kind != "Pod")
    # a ReplicaSet not made by a Deployment (no matching pod-template-hash) is the workload itself
    lone = pod(owner=("ReplicaSet", "legacy"))
    assert inj.owning_workload(lone) == inj.Workload("ReplicaSet", "legacy")


def test_what_the_pod_sets_wins() -> None:
    out = injected(SHAPES["own env and volumes"])
    container = out["spec"]["containers"][0]
    env = [item for item in container["env"] if item["name"] == "OTEL_SERVICE_NAME"]
    assert env == [{"name": "OTEL_SERVICE_NAME", "value": "checkout"}]  # once, the pod's
    assert env_of(container)["X"] == "1"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert {"name": "data", "emptyDir": {}} in out["spec"]["volumes"]
    # its own resource attributes are kept; ours only add the keys it does not set
    own = pod(
        containers=[
            {
                "name": "app",
                "image": "a",
                "env": [
                    {
                        "name": "OTEL_RESOURCE_ATTRIBUTES",
                        "value": "k8s.namespace.name=mine,team=blue",
                    }
                ],
            }
        ]
    )
    attributes = env_of(injected(own)["spec"]["containers"][0])["OTEL_RESOURCE_ATTRIBUTES"]
    assert attributes.startswith("k8s.namespace.name=mine,team=blue,")
    assert attributes.count("k8s.namespace.name") == 1 and "k8s.deployment.name=web" in attributes
    # a value from elsewhere stays as it is
    ref = {
        "name": "OTEL_RESOURCE_ATTRIBUTES",
        "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
    }
    from_ref = pod(containers=[{"name": "app", "image": "a", "env": [ref]}])
    assert [
        e for e in injected(from_ref)["spec"]["containers"][0]["env"] if e["name"] == ref["name"]
    ] == [ref]


def test_python_agent() -> None:
    out = injected(SHAPES["python"])
    (init,) = out["spec"]["initContainers"]
    assert init["image"] == PYTHON_AGENT_IMAGE
    assert init["command"] == [
        "cp",
        "-r",
        "/autoinstrumentation/.",
        "/otel-auto-instrumentation-python",
    ]
    assert init["securityContext"]["runAsNonRoot"] is True and init["resources"]["limits"]["memory"]
    assert {"name": "kvtrace-python-agent", "emptyDir": {"sizeLimit": "200Mi"}} in out["spec"][
        "volumes"
    ]
    env = env_of(out["spec"]["containers"][0])
    assert env["PYTHONPATH"] == (
        "/otel-auto-instrumentation-python/opentelemetry/instrumentation/"
        "auto_instrumentation:/otel-auto-instrumentation-python"
    )
    assert "JAVA_TOOL_OPTIONS" not in env
    own = pod(
        {"kvtrace.dev/inject-python": "true"},
        containers=[
            {"name": "app", "image": "a", "env": [{"name": "PYTHONPATH", "value": "/app"}]}
        ],
    )
    once = injected(own)
    assert env_of(once["spec"]["containers"][0])["PYTHONPATH"] == f"{inj.PYTHON_PATH}:/app"
    assert injected(once) == once


def test_java_agent() -> None:
    out = injected(SHAPES["java with own options"])
    (init,) = out["spec"]["initContainers"]
    assert init["image"] == JAVA_AGENT_IMAGE
    assert init["command"] == [
        "cp",
        "/javaagent.jar",
        "/otel-auto-instrumentation-java/javaagent.jar",
    ]
    env = env_of(out["spec"]["containers"][0])
    assert (
        env["JAVA_TOOL_OPTIONS"]
        == "-javaagent:/otel-auto-instrumentation-java/javaagent.jar -Xmx256m"
    )
    both = injected(SHAPES["both agents, existing init"])
    assert [c["name"] for c in both["spec"]["initContainers"]] == [
        "setup",
        "kvtrace-python-agent",
        "kvtrace-java-agent",
    ]


def test_the_operators_agent_images_run_and_are_part_of_the_checksum() -> None:
    """``--python-agent-image``/``--java-agent-image`` (``Images``) name the init containers;
    a pod is stale when its agent image is not the operator's; ``agent_images`` reads what a
    pod runs back (``kvtrace status`` computes the pod's checksum with it)."""
    mirror = dataclasses.replace(
        DEFAULT_IMAGES,
        python_agent="m.example/py:1",
        java_agent="m.example/java@sha256:" + "e" * 64,
    )
    source = SHAPES["both agents, existing init"]
    request = inj.parse_request(source["metadata"]["annotations"], source["metadata"]["namespace"])
    assert request is not None
    out = inj.inject(source, pipeline(), request, mirror)
    images = {c["name"]: c["image"] for c in out["spec"]["initContainers"]}
    assert images["kvtrace-python-agent"] == mirror.python_agent
    assert images["kvtrace-java-agent"] == mirror.java_agent
    assert inj.agent_images(out) == mirror
    assert inj.agent_images(pod()) == DEFAULT_IMAGES
    checksum = out["metadata"]["annotations"][inj.INJECTED_CHECKSUM]
    assert checksum == inj.config_checksum(pipeline(), request, mirror)
    assert checksum != inj.config_checksum(pipeline(), request)
    assert inj.inject(out, pipeline(), request, mirror) == out


def test_no_agent_without_the_annotation() -> None:
    out = injected(pod())
    assert "initContainers" not in out["spec"]
    assert "PYTHONPATH" not in env_of(out["spec"]["containers"][0])


def test_security_off_and_head_sampling() -> None:
    out = injected(pod(), pipeline(**PLAIN, sampling={"mode": "head", "ratio": 0.25}))
    env = env_of(out["spec"]["containers"][0])
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://traces-collector.obs.svc.cluster.local:4318"
    )
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    for absent in (
        "KVTRACE_OTLP_TOKEN",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ):
        assert absent not in env
    assert "volumes" not in out["spec"] or not out["spec"]["volumes"]


def test_config_checksum_follows_what_is_injected() -> None:
    request = inj.Request("obs", "traces")
    base = inj.config_checksum(pipeline(), request)
    assert base == inj.config_checksum(pipeline(), request)
    assert base != inj.config_checksum(pipeline(sampling={"mode": "head"}), request)
    assert base != inj.config_checksum(pipeline(**PLAIN), request)
    assert base != inj.config_checksum(pipeline(), inj.Request("obs", "traces", python=True))
    # what pods do not get (Jaeger's storage) does not restart them
    assert base == inj.config_checksum(pipeline(jaeger={"storage": {"type": "badger"}}), request)


def test_parse_request() -> None:
    assert inj.parse_request({}, "shop") is None
    assert inj.parse_request({"kvtrace.dev/inject": "false"}, "shop") is None
    assert inj.parse_request({"kvtrace.dev/inject": "traces"}, "shop") == inj.Request(
        "shop", "traces"
    )
    assert inj.parse_request(
        {
            "kvtrace.dev/inject": "obs/traces",
            "kvtrace.dev/inject-java": "true",
            "kvtrace.dev/restart-on-change": "true",
        },
        "shop",
    ) == inj.Request("obs", "traces", java=True)
    # our own bookkeeping annotations and unrelated ones are not typos
    assert inj.parse_request(
        {
            "kvtrace.dev/inject": "t",
            "kvtrace.dev/injected": "shop/t",
            "kvtrace.dev/injection-error": "x",
            "example.com/inject": "yes",
        },
        "shop",
    )


@pytest.mark.parametrize(
    ("annotations", "field", "says"),
    [
        ({"kvtrace.dev/inject": "Traces"}, "kvtrace.dev/inject", "PIPELINE or NAMESPACE/PIPELINE"),
        ({"kvtrace.dev/inject": "a/b/c"}, "kvtrace.dev/inject", "got 'a/b/c'"),
        ({"kvtrace.dev/inject": ""}, "kvtrace.dev/inject", "got ''"),
        (
            {"kvtrace.dev/inject": "t", "kvtrace.dev/inject-python": "yes"},
            "kvtrace.dev/inject-python",
            'expected "true" or "false"',
        ),
        (
            {"kvtrace.dev/inject-java": "true"},
            "kvtrace.dev/inject-java",
            "needs kvtrace.dev/inject",
        ),
        (
            {"kvtrace.dev/inject": "t", "kvtrace.dev/restart-on-change": "1"},
            "kvtrace.dev/restart-on-change",
            'expected "true"',
        ),
        ({"kvtrace.dev/injct": "t"}, "kvtrace.dev/injct", "did you mean kvtrace.dev/inject?"),
        (
            {"kvtrace.dev/inject": "t", "kvtrace.dev/inject-pyhton": "true"},
            "kvtrace.dev/inject-pyhton",
            "did you mean kvtrace.dev/inject-python?",
        ),
        ({"kvtrace.io/inject": "t"}, "kvtrace.io/inject", "did you mean kvtrace.dev/inject?"),
        ({"kvtrace.dev/injection": "t"}, "kvtrace.dev/injection", "unknown kvtrace annotation"),
    ],
)
def test_bad_annotations_are_named(annotations: dict[str, str], field: str, says: str) -> None:
    with pytest.raises(SpecError) as caught:
        inj.parse_request(annotations, "shop")
    assert caught.value.field == f"metadata.annotations['{field}']"
    assert says in caught.value.message


def test_invalid_pipeline_is_a_spec_error_and_refused_marks_the_pod() -> None:
    with pytest.raises(SpecError):
        injected(pod(), pipeline(sampling={"mode": "sometimes"}))
    marked = inj.refused(pod(), "TracingPipeline obs/traces not found")
    assert (
        marked["metadata"]["annotations"]["kvtrace.dev/injection-error"]
        == "TracingPipeline obs/traces not found"
    )
    assert marked["spec"] == pod()["spec"]
    assert "kvtrace.dev/injection-error" not in injected(marked)["metadata"]["annotations"]


def test_workload_secret() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid"}
    secret = inj.workload_secret(
        "shop", inj.Workload("Deployment", "web"), inj.Request("obs", "traces"), owner
    )
    assert secret["metadata"]["name"] == "web-deployment-otlp-workload"
    assert secret["metadata"]["namespace"] == "shop"
    assert secret["metadata"]["labels"]["kvtrace.dev/pipeline"] == "traces"
    assert secret["metadata"]["labels"]["kvtrace.dev/pipeline-namespace"] == "obs"
    assert secret["metadata"]["ownerReferences"] == [owner]
    assert "data" not in secret


def test_an_injected_workload_is_a_consumer_with_its_token_in_its_own_namespace() -> None:
    from kvtrace_operator.render import consumer_tokens as ct

    consumer = ct.referencing_consumer(ct.WORKLOAD, "shop/Deployment/web")
    assert consumer == ct.Consumer(
        "workload/shop/Deployment/web", "web-deployment-otlp-workload", "token", True, "shop"
    )
    auth = parse_pipeline({}).security.auth
    labels = [
        c.label
        for c in ct.consumers(
            auth, "traces", [("KVCluster", "kv"), (ct.WORKLOAD, "shop/Deployment/web")]
        )
    ]
    assert labels == ["pipeline", "KVCluster/kv", "workload/shop/Deployment/web"]
    assert inj.Workload("Deployment", "web").secret == consumer.secret
