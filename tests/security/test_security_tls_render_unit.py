"""Rendering of ``spec.security.tls`` (render/tls.py, render/certificates.py): which hop serves
and trusts what in each mode, which Secret every volume reads, the cert-manager Certificates,
and the errors for specs that cannot work."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kvtrace_operator.render import SpecError, render_kvcluster, render_pipeline, validate_pipeline
from kvtrace_operator.render.certificates import certificate_objects
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

NS = "store"


def tp(tls: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": NS, "uid": "u1"},
        "spec": {**spec, "security": {"tls": tls}},
    }


def kvc() -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv", "namespace": NS, "uid": "u2"},
        "spec": {"tracing": {"pipelineRef": {"name": "traces"}}},
    }


def by_name(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def config(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return yaml.safe_load(by_name(objects, "ConfigMap")[name]["data"]["config.yaml"])


def secret_volumes(deployment: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """volume name -> (Secret, keys mounted)."""
    return {
        volume["name"]: (
            volume["secret"]["secretName"],
            [item["key"] for item in volume["secret"]["items"]],
        )
        for volume in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
    }


SERVER = {
    "cert_file": "/etc/otelcol-serving/tls.crt",
    "key_file": "/etc/otelcol-serving/tls.key",
    "reload_interval": "1h",
}
TRUST = {"ca_file": "/etc/otelcol-trust/ca.crt"}


def test_managed_two_tiers_every_hop_is_tls_and_each_pod_mounts_only_what_it_needs() -> None:
    objects = render_pipeline(tp({"enabled": True}, collector={"replicas": 2}))
    edge, back, jaeger = (
        config(objects, name)
        for name in ("traces-collector", "traces-collector-sampling", "traces-jaeger")
    )
    for server in (edge, back):
        assert [
            protocol["tls"] for protocol in server["receivers"]["otlp"]["protocols"].values()
        ] == [SERVER] * 2
    sampling_dns = f"traces-collector-sampling.{NS}.svc.cluster.local"
    assert edge["exporters"]["load_balancing"]["protocol"]["otlp"]["tls"] == {
        **TRUST,
        "server_name_override": sampling_dns,
    }
    jaeger_dns = f"traces-jaeger-otlp.{NS}.svc.cluster.local"
    assert back["exporters"]["otlp_grpc/jaeger"]["tls"] == {
        **TRUST,
        "server_name_override": jaeger_dns,
    }
    jaeger_tls = {
        "cert_file": "/etc/jaeger-serving/tls.crt",
        "key_file": "/etc/jaeger-serving/tls.key",
        "reload_interval": "1h",
    }
    assert [protocol["tls"] for protocol in jaeger["receivers"]["otlp"]["protocols"].values()] == [
        jaeger_tls
    ] * 2
    deployments = by_name(objects, "Deployment")
    assert secret_volumes(deployments["traces-collector"]) == {
        "auth-token": ("traces-otlp-tokens", ["tokens"]),  # auth is on by default, at the edge
        "serving-cert": ("traces-collector-tls", ["tls.crt", "tls.key"]),
        "telemetry-ca": ("traces-tls-trust", ["ca.crt"]),
    }
    assert secret_volumes(deployments["traces-collector-sampling"]) == {
        "serving-cert": ("traces-collector-sampling-tls", ["tls.crt", "tls.key"]),
        "telemetry-ca": ("traces-tls-trust", ["ca.crt"]),
    }
    assert secret_volumes(deployments["traces-jaeger"]) == {
        "serving-cert": ("traces-jaeger-tls", ["tls.crt", "tls.key"])
    }
    # The KV members: only the trust bundle, https, the CA file.
    statefulset = by_name(render_kvcluster(kvc(), tp({"enabled": True})), "StatefulSet")["kv"]
    pod = statefulset["spec"]["template"]["spec"]
    # (and their own cluster's leaf and bundle: KV TLS is on by default, render/kvsecurity.py)
    assert secret_volumes(statefulset) == {
        "telemetry-ca": ("traces-tls-trust", ["ca.crt"]),
        **KV_TLS,
    }
    env = {item["name"]: item.get("value") for item in pod["containers"][0]["env"]}
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        == f"https://traces-collector.{NS}.svc.cluster.local:4318"
    )
    assert env["OTEL_EXPORTER_OTLP_CERTIFICATE"] == "/etc/kvtrace-telemetry/ca.crt"
    assert not certificate_objects(
        tp({"enabled": True}), parse_pipeline(tp({"enabled": True})["spec"])
    )


KV_TLS = {
    "serving-cert": ("kv-kv-tls", ["tls.crt", "tls.key"]),
    "kv-trust": ("kv-kv-tls-trust", ["ca.crt"]),
}


def test_one_tier_managed_exports_to_jaeger_over_tls() -> None:
    objects = render_pipeline(tp({"enabled": True, "mode": "managed"}))
    edge = config(objects, "traces-collector")
    assert edge["exporters"]["otlp_grpc/jaeger"]["tls"] == {
        **TRUST,
        "server_name_override": f"traces-jaeger-otlp.{NS}.svc.cluster.local",
    }
    assert set(secret_volumes(by_name(objects, "Deployment")["traces-collector"])) == {
        "auth-token",
        "serving-cert",
        "telemetry-ca",
    }


def test_secret_mode_keeps_the_old_shape_edge_only() -> None:
    """``enabled`` + ``secretName`` (no mode) is mode secret: the edge serves the user's
    Secret, the members trust its ca.crt, the inner hops stay plaintext."""
    objects = render_pipeline(
        tp({"enabled": True, "secretName": "mine"}, collector={"replicas": 2})
    )
    edge, back = config(objects, "traces-collector"), config(objects, "traces-collector-sampling")
    assert edge["receivers"]["otlp"]["protocols"]["grpc"]["tls"] == SERVER
    assert "tls" not in back["receivers"]["otlp"]["protocols"]["grpc"]
    assert edge["exporters"]["load_balancing"]["protocol"]["otlp"]["tls"] == {"insecure": True}
    assert back["exporters"]["otlp_grpc/jaeger"]["tls"] == {"insecure": True}
    assert "tls" not in config(objects, "traces-jaeger")["receivers"]["otlp"]["protocols"]["grpc"]
    assert secret_volumes(by_name(objects, "Deployment")["traces-collector"]) == {
        "auth-token": ("traces-otlp-tokens", ["tokens"]),
        "serving-cert": ("mine", ["tls.crt", "tls.key"]),
    }
    statefulset = by_name(
        render_kvcluster(kvc(), tp({"enabled": True, "secretName": "mine"})), "StatefulSet"
    )["kv"]
    assert secret_volumes(statefulset) == {"telemetry-ca": ("mine", ["ca.crt"]), **KV_TLS}


def test_tls_off_renders_no_tls() -> None:
    text = yaml.safe_dump(render_pipeline(tp({"enabled": False}, collector={"replicas": 2})))
    assert "tls.crt" not in text and "ca_file" not in text and "Certificate" not in text


def test_reload_interval_is_a_quarter_of_renew_before_at_most_an_hour() -> None:
    tls = {
        "enabled": True,
        "duration": "2m",
        "renewBefore": "40s",
        "caDuration": "1h",
        "caRenewBefore": "10m",
    }
    edge = config(render_pipeline(tp(tls)), "traces-collector")
    assert edge["receivers"]["otlp"]["protocols"]["http"]["tls"]["reload_interval"] == "10s"


def test_cert_manager_renders_one_certificate_per_server() -> None:
    pipe = tp(
        {"enabled": True, "mode": "certManager", "issuerRef": {"name": "ca-issuer"}},
        collector={"replicas": 3},
    )
    objects = render_pipeline(pipe)
    certificates = by_name(objects, "Certificate")
    assert list(certificates) == [
        "traces-collector-tls",
        "traces-collector-sampling-tls",
        "traces-jaeger-tls",
    ]
    kinds = [obj["kind"] for obj in objects]
    # applied before the workloads that mount their Secrets (after the default auth token Secret)
    assert kinds[:5] == [
        "Secret",
        "Secret",
        "Certificate",
        "Certificate",
        "Certificate",
    ]  # token set + token
    jaeger = certificates["traces-jaeger-tls"]
    assert jaeger["apiVersion"] == "cert-manager.io/v1"
    assert jaeger["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert jaeger["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kvtrace-operator"
    assert jaeger["spec"] == {
        "secretName": "traces-jaeger-tls",
        "commonName": "traces-jaeger-otlp",
        "dnsNames": [
            "traces-jaeger-otlp",
            f"traces-jaeger-otlp.{NS}",
            f"traces-jaeger-otlp.{NS}.svc",
            f"traces-jaeger-otlp.{NS}.svc.cluster.local",
            # the query port serves the same leaf (docs/security.md)
            "traces-jaeger-query",
            f"traces-jaeger-query.{NS}",
            f"traces-jaeger-query.{NS}.svc",
            f"traces-jaeger-query.{NS}.svc.cluster.local",
        ],
        "duration": "2160h",
        "renewBefore": "720h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["server auth", "client auth", "digital signature"],
        "issuerRef": {"name": "ca-issuer", "kind": "Issuer", "group": "cert-manager.io"},
    }
    # The consuming side is the same as managed: the trust bundle the operator assembles.
    assert secret_volumes(by_name(objects, "Deployment")["traces-collector"])["telemetry-ca"] == (
        "traces-tls-trust",
        ["ca.crt"],
    )


def test_no_certificate_for_a_disabled_jaeger() -> None:
    pipe = tp(
        {
            "enabled": True,
            "mode": "certManager",
            "issuerRef": {"name": "i", "kind": "ClusterIssuer"},
        },
        jaeger={"enabled": False},
        exporters={"debug": {"enabled": True}},
    )
    certificates = by_name(render_pipeline(pipe), "Certificate")
    assert list(certificates) == ["traces-collector-tls"]
    assert certificates["traces-collector-tls"]["spec"]["issuerRef"]["kind"] == "ClusterIssuer"


@pytest.mark.parametrize(
    ("tls", "field", "phrase"),
    [
        (
            {"mode": "vault"},
            "spec.security.tls.mode",
            "expected one of managed, certManager, secret",
        ),
        (
            {"mode": "managed", "secretName": "x"},
            "spec.security.tls.secretName",
            "only by mode secret",
        ),
        ({"mode": "certManager"}, "spec.security.tls.issuerRef", "required with mode certManager"),
        (
            {"mode": "certManager", "issuerRef": {"name": "i", "kind": "Vault"}},
            "spec.security.tls.issuerRef.kind",
            "expected one of Issuer, ClusterIssuer",
        ),
        (
            {"renewBefore": "3000h"},
            "spec.security.tls.renewBefore",
            "expected less than duration (2160h)",
        ),
        (
            {"caRenewBefore": "30000h"},
            "spec.security.tls.caRenewBefore",
            "expected less than caDuration",
        ),
        (
            {"caRenewBefore": "1000h"},
            "spec.security.tls.caRenewBefore",
            "more than twice renewBefore",
        ),
        ({"duration": "500ms"}, "spec.security.tls.duration", "at least 1s"),
        ({"renewBefore": "soon"}, "spec.security.tls.renewBefore", "expected a duration"),
    ],
)
@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
def test_bad_tls_specs_name_the_field(
    tls: dict[str, Any], field: str, phrase: str, enabled: bool
) -> None:
    """As the CRD's rules: whether or not TLS is enabled."""
    with pytest.raises(SpecError) as error:
        validate_pipeline(tp({"enabled": enabled, **tls}))
    assert error.value.field == field and phrase in error.value.message
