"""render_pipeline: collector tier(s), Jaeger, instrumentation, over the spec space."""

from __future__ import annotations

from typing import Any

import pytest
from render_testlib import by_kind, config_of, one, pipeline, validate_k8s

from kvtrace_operator.render import pipeline_endpoints, render_pipeline
from kvtrace_operator.render.labels import CHECKSUM_ANNOTATION
from kvtrace_operator.spec.defaults import PIPELINE_DEFAULTS

pytestmark = pytest.mark.unit

SPECS: list[dict[str, Any]] = [
    {},
    {"sampling": {"mode": "development"}},
    {"sampling": {"mode": "head", "ratio": 0.3}},
    {"collector": {"replicas": 3}},
    {"collector": {"replicas": 2}, "sampling": {"mode": "head"}},
    {
        "collector": {"replicas": 2, "resources": {"limits": {"memory": "512Mi"}}},
        "receivers": {"zipkin": {"enabled": True}, "jaeger": {"enabled": True}},
    },
    {
        "jaeger": {
            "storage": {
                "type": "badger",
                "retention": "24h",
                "size": "5Gi",
                "storageClassName": "fast",
            }
        }
    },
    {"jaeger": {"tenancy": {"enabled": True, "tenants": ["team-a", "team-b"]}}},
    {
        "jaeger": {"enabled": False},
        "exporters": {"otlp": [{"name": "vendor", "endpoint": "otlp.example.com:443"}]},
    },
    {"receivers": {"zipkin": {"enabled": True}}},
    {
        "collector": {"replicas": 2},
        "exporters": {
            "otlp": [
                {
                    "name": "vendor-x",
                    "endpoint": "otlp.vendor.io:443",
                    "secretHeaders": [
                        {
                            "name": "authorization",
                            "secretKeyRef": {"name": "vendor", "key": "token"},
                        }
                    ],
                    "tls": {"caSecret": {"name": "vendor-ca", "key": "ca.pem"}},
                }
            ]
        },
    },
]


def two_tier(spec: dict[str, Any]) -> bool:
    return (
        spec.get("collector", {}).get("replicas", 1) > 1
        and spec.get("sampling", {}).get("mode", "production") == "production"
    )


def jaeger_enabled(spec: dict[str, Any]) -> bool:
    return spec.get("jaeger", {}).get("enabled", True)


def metrics_on(spec: dict[str, Any]) -> bool:
    return bool(spec.get("metrics", {}).get("enabled", PIPELINE_DEFAULTS["metrics"]["enabled"]))


def badger(spec: dict[str, Any]) -> bool:
    return spec.get("jaeger", {}).get("storage", {}).get("type") == "badger"


@pytest.mark.parametrize("spec", SPECS)
class TestRenderPipeline:
    def test_valid_kubernetes_objects(self, spec: dict[str, Any]) -> None:
        for obj in render_pipeline(pipeline(**spec)):
            validate_k8s(obj)

    def test_objects(self, spec: dict[str, Any]) -> None:
        objects = render_pipeline(pipeline(**spec))
        names = [(obj["kind"], obj["metadata"]["name"]) for obj in objects]
        # auth is on by default: the collector's token set (the edge mounts it) and the
        # pipeline's own generated token first
        expected = [("Secret", "traces-otlp-tokens"), ("Secret", "traces-otlp-token")]
        workload = ("ServiceAccount", "ConfigMap", "Deployment", "Service")
        if two_tier(spec):
            expected += [(kind, "traces-collector-sampling") for kind in workload]
        # The edge tier reads the sending pods (k8s_attributes, on by default): its Role.
        edge = ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service")
        expected += [(kind, "traces-collector") for kind in edge]
        if jaeger_enabled(spec):
            expected += [("PersistentVolumeClaim", "traces-jaeger-data")] if badger(spec) else []
            expected += [
                ("ServiceAccount", "traces-jaeger"),
                ("ConfigMap", "traces-jaeger"),
                ("Deployment", "traces-jaeger"),
                ("Service", "traces-jaeger-query"),
                ("Service", "traces-jaeger-otlp"),
            ]
        # Prometheus (spec.metrics): RBAC for its pod discovery, config, workload.
        expected += (
            []
            if not metrics_on(spec)
            else [
                ("ServiceAccount", "traces-prometheus"),
                ("Role", "traces-prometheus"),
                ("RoleBinding", "traces-prometheus"),
                ("ConfigMap", "traces-prometheus"),
                ("Deployment", "traces-prometheus"),
                ("Service", "traces-prometheus"),
            ]
        )
        expected += [("ConfigMap", "traces-instrumentation")]
        # NetworkPolicies last (on by default): one per collector tier, Jaeger, Prometheus.
        if two_tier(spec):
            expected += [("NetworkPolicy", "traces-collector-sampling")]
        expected += [("NetworkPolicy", "traces-collector")]
        expected += [("NetworkPolicy", "traces-jaeger")] if jaeger_enabled(spec) else []
        expected += [("NetworkPolicy", "traces-prometheus")] if metrics_on(spec) else []
        assert names == expected

    def test_metadata(self, spec: dict[str, Any]) -> None:
        for obj in render_pipeline(pipeline(**spec)):
            labels = obj["metadata"]["labels"]
            assert labels["app.kubernetes.io/name"] == "tracingpipeline"
            assert labels["app.kubernetes.io/instance"] == "traces"
            assert labels["app.kubernetes.io/part-of"] == "kvtrace"
            assert labels["app.kubernetes.io/managed-by"] == "kvtrace-operator"
            assert obj["metadata"]["namespace"] == "store"
            [owner] = obj["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
                "TracingPipeline",
                "traces",
                "uid-tp",
                True,
            )

    def test_collector_service_ports(self, spec: dict[str, Any]) -> None:
        service = one(render_pipeline(pipeline(**spec)), "Service", "traces-collector")["spec"]
        ports = {p["name"]: p["port"] for p in service["ports"]}
        assert ports["otlp-grpc"] == 4317 and ports["otlp-http"] == 4318
        receivers = spec.get("receivers", {})
        assert ("zipkin" in ports) == receivers.get("zipkin", {}).get("enabled", False)
        assert ("jaeger-grpc" in ports) == receivers.get("jaeger", {}).get("enabled", False)
        component = "collector-loadbalancer" if two_tier(spec) else "collector"
        assert service["selector"]["app.kubernetes.io/component"] == component

    def test_deployments(self, spec: dict[str, Any]) -> None:
        for deployment in by_kind(render_pipeline(pipeline(**spec)), "Deployment"):
            if deployment["metadata"]["name"] == "traces-prometheus":
                continue  # its own probes and flags: tests/operator/unit/test_render_metrics.py
            template = deployment["spec"]["template"]
            assert (
                deployment["spec"]["selector"]["matchLabels"].items()
                <= template["metadata"]["labels"].items()
            )
            assert len(template["metadata"]["annotations"][CHECKSUM_ANNOTATION]) == 64
            [container] = template["spec"]["containers"]
            assert template["spec"]["enableServiceLinks"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["readinessProbe"]["httpGet"]["port"] == "health"
            assert {p["name"]: p["containerPort"] for p in container["ports"]}["health"] == 13133
            assert container["args"][0].startswith("--config=/etc/")
            assert "command" not in container  # the image's entrypoint: otelcol-kvtrace or jaeger
            if deployment["metadata"]["name"].startswith("traces-collector"):
                assert container["name"] == "otelcol"
                assert deployment["spec"]["replicas"] == spec.get("collector", {}).get(
                    "replicas", 1
                )
                user = spec.get("collector", {}).get("resources") or {}
                for part in ("requests", "limits"):  # the user's values, defaults beside them
                    assert (user.get(part) or {}).items() <= container["resources"][part].items()
                assert (
                    "memory" in container["resources"]["limits"]
                )  # never unbounded (render.sizing)
            else:
                assert container["name"] == "jaeger"
                assert deployment["spec"]["replicas"] == 1
                assert deployment["spec"]["strategy"] == {"type": "Recreate"}

    def test_two_tier_topology(self, spec: dict[str, Any]) -> None:
        objects = render_pipeline(pipeline(**spec))
        front = config_of(one(objects, "ConfigMap", "traces-collector"))
        if not two_tier(spec):
            assert "load_balancing" not in front["exporters"]
            return
        assert front["exporters"] == {
            "load_balancing": {
                "routing_key": "traceID",
                "protocol": {
                    "otlp": {
                        "tls": {
                            "ca_file": "/etc/otelcol-trust/ca.crt",
                            "server_name_override": "traces-collector-sampling.store.svc.cluster.local",
                        },
                        "timeout": "5s",
                    }
                },
                "resolver": {
                    "dns": {
                        "hostname": "traces-collector-sampling.store.svc.cluster.local",
                        "port": "4317",
                    }
                },
            }
        }
        headless = one(objects, "Service", "traces-collector-sampling")["spec"]
        assert headless["clusterIP"] == "None"
        assert headless["selector"]["app.kubernetes.io/component"] == "collector-sampling"
        back = config_of(one(objects, "ConfigMap", "traces-collector-sampling"))
        assert "tail_sampling" in back["processors"] and "tail_sampling" not in front["processors"]

    def test_jaeger(self, spec: dict[str, Any]) -> None:
        objects = render_pipeline(pipeline(**spec))
        if not jaeger_enabled(spec):
            assert not [o for o in objects if "jaeger" in o["metadata"]["name"]]
            return
        query = one(objects, "Service", "traces-jaeger-query")["spec"]
        assert {p["name"]: p["port"] for p in query["ports"]} == {
            "query-http": 16686,
            "query-grpc": 16685,
        }
        otlp = one(objects, "Service", "traces-jaeger-otlp")["spec"]
        assert {p["name"]: p["port"] for p in otlp["ports"]} == {
            "otlp-grpc": 4317,
            "otlp-http": 4318,
        }
        pod = one(objects, "Deployment", "traces-jaeger")["spec"]["template"]["spec"]
        claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        if badger(spec):
            pvc = one(objects, "PersistentVolumeClaim")["spec"]
            assert pvc["resources"]["requests"]["storage"] == spec["jaeger"]["storage"]["size"]
            assert pvc["storageClassName"] == spec["jaeger"]["storage"]["storageClassName"]
            assert claims == [
                {"name": "data", "persistentVolumeClaim": {"claimName": "traces-jaeger-data"}}
            ]
        else:
            assert claims == []

    def test_instrumentation_configmap(self, spec: dict[str, Any]) -> None:
        data = one(render_pipeline(pipeline(**spec)), "ConfigMap", "traces-instrumentation")["data"]
        assert (
            data["OTEL_EXPORTER_OTLP_ENDPOINT"]
            == "https://traces-collector.store.svc.cluster.local:4318"
        )
        assert data["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert data["OTEL_TRACES_EXPORTER"] == "otlp"
        assert "OTEL_SERVICE_NAME" not in data
        mode = spec.get("sampling", {}).get("mode", "production")
        if mode == "head":
            assert data["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
            assert data["OTEL_TRACES_SAMPLER_ARG"] == str(spec["sampling"].get("ratio", 0.1))
        else:
            assert data["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
            assert "OTEL_TRACES_SAMPLER_ARG" not in data


@pytest.mark.parametrize("replicas", [1, 3])
def test_exporter_secrets_reach_only_the_exporting_tier(replicas: int) -> None:
    exporter = {
        "name": "vendor-x",
        "endpoint": "otlp.vendor.io:443",
        "headers": {"x-plain": "1"},
        "secretHeaders": [
            {"name": "authorization", "secretKeyRef": {"name": "vendor", "key": "token"}},
            {"name": "x-team", "secretKeyRef": {"name": "vendor", "key": "team"}},
        ],
        "tls": {"caSecret": {"name": "vendor-ca", "key": "ca.pem"}},
    }
    objects = render_pipeline(
        pipeline(collector={"replicas": replicas}, exporters={"otlp": [exporter]})
    )
    exporting = "traces-collector-sampling" if replicas > 1 else "traces-collector"
    config = config_of(one(objects, "ConfigMap", exporting))["exporters"]["otlp_grpc/vendor-x"]
    assert config["headers"] == {
        "x-plain": "1",
        "authorization": "${env:KVTRACE_EXPORTER_VENDOR_X_HEADER_0}",
        "x-team": "${env:KVTRACE_EXPORTER_VENDOR_X_HEADER_1}",
    }
    assert config["tls"]["ca_file"] == "/etc/otelcol-tls/vendor-x/ca.crt"
    pod = one(objects, "Deployment", exporting)["spec"]["template"]["spec"]
    secret_env = [e for e in pod["containers"][0]["env"] if e["name"] != "K8S_NODE_NAME"]
    assert secret_env == [
        {
            "name": "KVTRACE_EXPORTER_VENDOR_X_HEADER_0",
            "valueFrom": {"secretKeyRef": {"name": "vendor", "key": "token"}},
        },
        {
            "name": "KVTRACE_EXPORTER_VENDOR_X_HEADER_1",
            "valueFrom": {"secretKeyRef": {"name": "vendor", "key": "team"}},
        },
    ]
    assert {
        "name": "tls-vendor-x",
        "secret": {"secretName": "vendor-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]},
    } in pod["volumes"]
    assert {"name": "tls-vendor-x", "mountPath": "/etc/otelcol-tls/vendor-x", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"]
    )
    if replicas > 1:
        front = one(objects, "Deployment", "traces-collector")["spec"]["template"]["spec"]
        # the edge gets only its node's name (the k8snode detector), no exporter Secret
        assert [e["name"] for e in front["containers"][0]["env"]] == ["K8S_NODE_NAME"]
        # the edge mounts only the token set of the default auth and its TLS (leaf, trust
        # bundle), none of the exporter's Secrets
        assert [v["secret"]["secretName"] for v in front["volumes"] if "secret" in v] == [
            "traces-otlp-tokens",
            "traces-collector-tls",
            "traces-tls-trust",
        ]


def test_collector_checksum_rolls_on_config_change() -> None:
    def annotation(tp: dict[str, Any]) -> str:
        deployment = one(render_pipeline(tp), "Deployment", "traces-collector")
        return deployment["spec"]["template"]["metadata"]["annotations"][CHECKSUM_ANNOTATION]

    assert annotation(pipeline()) != annotation(pipeline(sampling={"ratio": 0.5}))
    assert annotation(pipeline()) == annotation(
        pipeline(jaeger={"image": "jaegertracing/jaeger:other"})
    )


def test_endpoints() -> None:
    assert pipeline_endpoints(pipeline(metrics={"enabled": True})) == {  # TLS by default
        "otlpGrpc": "https://traces-collector.store.svc.cluster.local:4317",
        "otlpHttp": "https://traces-collector.store.svc.cluster.local:4318",
        "jaegerQuery": "https://traces-jaeger-query.store.svc.cluster.local:16686",  # Jaeger's leaf
        "metrics": "http://traces-prometheus.store.svc.cluster.local:9090",  # spec.metrics
    }
    plaintext = pipeline_endpoints(pipeline(security={"tls": {"enabled": False}}))
    assert plaintext["otlpHttp"] == "http://traces-collector.store.svc.cluster.local:4318"
    assert plaintext["jaegerQuery"] == "http://traces-jaeger-query.store.svc.cluster.local:16686"
    assert "jaegerQuery" not in pipeline_endpoints(pipeline(jaeger={"enabled": False}))
    assert "metrics" not in pipeline_endpoints(pipeline(metrics={"enabled": False}))
    external = pipeline(metrics={"enabled": True, "external": {"url": "http://vm:8428"}})
    assert pipeline_endpoints(external)["metrics"] == "http://vm:8428"
