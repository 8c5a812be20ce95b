"""What ``spec.security`` (auth, TLS) renders, and that secrets only travel by reference
(docs/security.md). The behaviour against the real collector is in
``test_security_telemetry_dataplane.py``."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from kvtrace_operator.render import (
    SpecError,
    pipeline_endpoints,
    render_collector_config,
    render_kvcluster,
    render_pipeline,
    validate_pipeline,
)
from kvtrace_operator.render.security import AUTH_EXTENSION, CLIENT_CA_FILE, TOKEN_FILE

pytestmark = pytest.mark.unit

AUTH = {"enabled": True, "tokenSecretRef": {"name": "otlp-token", "key": "token"}}
TLS = {"enabled": True, "secretName": "collector-tls"}
ALL_RECEIVERS = {"zipkin": {"enabled": True}, "jaeger": {"enabled": True}}


def tp(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store", "uid": "u-tp"},
        "spec": spec,
    }


def kvc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "orders", "namespace": "store", "uid": "u-kv"},
        "spec": {"tracing": {"pipelineRef": {"name": "traces"}}, **spec},
    }


def servers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every server block of every receiver, by ``receiver/protocol``."""
    result = {}
    for name, receiver in config["receivers"].items():
        if "protocols" in receiver:
            result.update(
                {f"{name}/{proto}": conf for proto, conf in receiver["protocols"].items()}
            )
        else:
            result[name] = receiver
    return result


def deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)


def member_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "StatefulSet")["spec"]["template"]["spec"]


def test_auth_and_managed_tls_on_by_default() -> None:
    """Without ``spec.security``: every edge receiver requires the generated token and serves
    the operator-managed leaf; every inner hop is TLS too; the members export over https and
    trust the pipeline's bundle. The certificates are made by the operator, never rendered."""
    pipe = tp(receivers=ALL_RECEIVERS, collector={"replicas": 2})
    edge, inner = (
        render_collector_config(pipe, "loadbalancer"),
        render_collector_config(pipe, "sampling"),
    )
    serving = {
        "cert_file": "/etc/otelcol-serving/tls.crt",
        "key_file": "/etc/otelcol-serving/tls.key",
        "reload_interval": "1h",
    }
    assert all(
        s["auth"] == {"authenticator": AUTH_EXTENSION} and s["tls"] == serving
        for s in servers(edge).values()
    )
    assert all(s["tls"] == serving for s in servers(inner).values())
    assert (
        edge["exporters"]["load_balancing"]["protocol"]["otlp"]["tls"]["ca_file"]
        == "/etc/otelcol-trust/ca.crt"
    )
    assert inner["exporters"]["otlp_grpc/jaeger"]["tls"]["ca_file"] == "/etc/otelcol-trust/ca.crt"
    assert edge["extensions"][AUTH_EXTENSION] == {"filename": TOKEN_FILE}
    assert edge["service"]["telemetry"]["metrics"]["level"] == "detailed"
    secrets = [o for o in render_pipeline(tp()) if o["kind"] == "Secret"]
    assert [s["metadata"]["name"] for s in secrets] == ["traces-otlp-tokens", "traces-otlp-token"]
    assert not any(
        "data" in s for s in secrets
    )  # no TLS Secret either: the operator makes their keys
    cluster = render_kvcluster(kvc(), tp())
    assert (
        cluster[0]["kind"] == "Secret"
        and cluster[0]["metadata"]["name"] == "orders-otlp-client-token"
    )
    env = {e["name"]: e for e in member_pod(cluster)["containers"][0]["env"]}
    assert env["KVTRACE_OTLP_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "orders-otlp-client-token", "key": "token"}
    }
    assert (
        env["OTEL_EXPORTER_OTLP_HEADERS"]["value"] == "authorization=Bearer%20$(KVTRACE_OTLP_TOKEN)"
    )
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]
        == "https://traces-collector.store.svc.cluster.local:4318"
    )
    assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"]["value"] == CLIENT_CA_FILE
    assert pipeline_endpoints(tp())["otlpHttp"].startswith("https://")


def test_tls_enabled_false_is_the_explicit_plaintext_opt_out() -> None:
    pipe = tp(
        receivers=ALL_RECEIVERS, collector={"replicas": 2}, security={"tls": {"enabled": False}}
    )
    for tier in ("loadbalancer", "sampling"):
        config = render_collector_config(pipe, tier)
        assert all("tls" not in s for s in servers(config).values())
    assert render_collector_config(pipe, "sampling")["exporters"]["otlp_grpc/jaeger"]["tls"] == {
        "insecure": True
    }
    pod = member_pod(render_kvcluster(kvc(), pipe))
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://traces-collector.store.svc.cluster.local:4318"
    )
    assert "OTEL_EXPORTER_OTLP_CERTIFICATE" not in env
    assert not [v for v in pod["volumes"] if v["name"] == "telemetry-ca"]
    assert pipeline_endpoints(pipe)["otlpHttp"].startswith("http://")


def test_auth_can_be_turned_off() -> None:
    pipe = tp(receivers=ALL_RECEIVERS, security={"auth": {"enabled": False}})
    config = render_collector_config(pipe)
    assert all("auth" not in s for s in servers(config).values())
    assert list(config["extensions"]) == ["health_check"]
    assert "level" not in config["service"]["telemetry"]["metrics"]
    assert not [o for o in render_pipeline(pipe) if o["kind"] == "Secret"]
    env = {e["name"] for e in member_pod(render_kvcluster(kvc(), pipe))["containers"][0]["env"]}
    assert not env & {"OTEL_EXPORTER_OTLP_HEADERS", "KVTRACE_OTLP_TOKEN"}


@pytest.mark.parametrize("replicas", [1, 3], ids=["one-tier", "two-tier"])
def test_auth_guards_every_edge_receiver(replicas: int) -> None:
    pipe = tp(receivers=ALL_RECEIVERS, collector={"replicas": replicas}, security={"auth": AUTH})
    edge = render_collector_config(pipe, "loadbalancer" if replicas > 1 else "sampling")
    assert set(servers(edge)) == {
        "otlp/grpc",
        "otlp/http",
        "zipkin",
        "jaeger/grpc",
        "jaeger/thrift_http",
    }
    for name, server in servers(edge).items():
        assert server["auth"] == {"authenticator": AUTH_EXTENSION}, name
    assert edge["extensions"][AUTH_EXTENSION] == {"filename": TOKEN_FILE}
    assert edge["service"]["extensions"] == ["health_check", AUTH_EXTENSION]
    # Refused requests are counted: the edge's servers report requests by status.
    assert edge["service"]["telemetry"]["metrics"]["level"] == "detailed"
    # The token file comes from the token-set Secret, mounted read-only into the edge tier only.
    objects = render_pipeline(pipe)
    pod = deployment(objects, "traces-collector")["spec"]["template"]["spec"]
    assert {
        "name": "auth-token",
        "secret": {
            "secretName": "traces-otlp-tokens",
            "items": [{"key": "tokens", "path": "token"}],
        },
    } in pod["volumes"]
    assert {"name": "auth-token", "mountPath": "/etc/otelcol-auth", "readOnly": True} in pod[
        "containers"
    ][0]["volumeMounts"]
    if replicas > 1:  # the sampling tier is reached only from the load-balancing tier
        back = render_collector_config(pipe, "sampling")
        assert (
            all("auth" not in s for s in servers(back).values())
            and AUTH_EXTENSION not in back["extensions"]
        )
        assert "level" not in back["service"]["telemetry"]["metrics"]
        back_pod = deployment(objects, "traces-collector-sampling")["spec"]["template"]["spec"]
        assert not any(v["name"] == "auth-token" for v in back_pod["volumes"])


def test_members_get_the_token_by_reference_only() -> None:
    pipe = tp(security={"auth": AUTH})
    objects = render_kvcluster(kvc(), pipe) + render_pipeline(pipe)
    env = member_pod(objects)["containers"][0]["env"]
    names = [e["name"] for e in env]
    token = env[names.index("KVTRACE_OTLP_TOKEN")]
    # its own token, not the pipeline's tokenSecretRef
    assert token["valueFrom"] == {
        "secretKeyRef": {"name": "orders-otlp-client-token", "key": "token"}
    }
    header = env[names.index("OTEL_EXPORTER_OTLP_HEADERS")]
    assert header == {
        "name": "OTEL_EXPORTER_OTLP_HEADERS",
        "value": "authorization=Bearer%20$(KVTRACE_OTLP_TOKEN)",
    }
    assert names.index("KVTRACE_OTLP_TOKEN") < names.index(
        "OTEL_EXPORTER_OTLP_HEADERS"
    )  # $(VAR) order
    # No ConfigMap mentions the token or the header (the instrumentation ConfigMap included).
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        text = yaml.safe_dump(cm)
        assert "KVTRACE_OTLP_TOKEN" not in text and "OTEL_EXPORTER_OTLP_HEADERS" not in text, cm[
            "metadata"
        ]["name"]


def test_tls_serves_the_secret_and_members_verify_with_its_ca_only() -> None:
    pipe = tp(receivers=ALL_RECEIVERS, security={"tls": TLS})
    config = render_collector_config(pipe)
    for name, server in servers(config).items():
        assert server["tls"] == {
            "cert_file": "/etc/otelcol-serving/tls.crt",
            "key_file": "/etc/otelcol-serving/tls.key",
            "reload_interval": "1h",
        }, name
    objects = render_kvcluster(kvc(), pipe) + render_pipeline(pipe)
    collector_pod = deployment(objects, "traces-collector")["spec"]["template"]["spec"]
    assert {
        "name": "serving-cert",
        "secret": {
            "secretName": "collector-tls",
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
        },
    } in collector_pod["volumes"]
    pod = member_pod(objects)
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        == "https://traces-collector.store.svc.cluster.local:4318"
    )
    assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"] == CLIENT_CA_FILE
    ca = next(v for v in pod["volumes"] if v["name"] == "telemetry-ca")
    assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # never the private key
    assert {"name": "telemetry-ca", "mountPath": "/etc/kvtrace-telemetry", "readOnly": True} in pod[
        "containers"
    ][0]["volumeMounts"]
    instrumentation = next(o for o in objects if o["metadata"]["name"] == "traces-instrumentation")
    assert instrumentation["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("https://")
    assert pipeline_endpoints(pipe)["otlpHttp"].startswith("https://")


@pytest.mark.parametrize("security", [{"auth": AUTH}, {"tls": TLS}, {"auth": AUTH, "tls": TLS}])
def test_secured_objects_are_valid_kubernetes(security: dict[str, Any]) -> None:
    pipe = tp(collector={"replicas": 2}, security=security)
    for obj in render_kvcluster(kvc(), pipe) + render_pipeline(pipe):
        kubernetes_validate.validate(obj, "1.37", strict=True)


@pytest.mark.parametrize(
    ("security", "field", "phrase"),
    [
        (
            {"auth": {"enabled": True, "tokenSecretRef": {"name": "x"}}},
            "spec.security.auth.tokenSecretRef",
            "expected {name: SECRET, key: KEY}",
        ),
        (
            {"tls": {"enabled": True, "mode": "secret"}},
            "spec.security.tls.secretName",
            "required with mode secret",
        ),
    ],
)
def test_bad_security_specs_name_the_field(
    security: dict[str, Any], field: str, phrase: str
) -> None:
    with pytest.raises(SpecError) as error:
        validate_pipeline(tp(security=security))
    assert error.value.field == field and phrase in error.value.message
