"""kvtrace.devstack.local_tls: the certificates harnesses serve for the TLS default (the
pipeline's leaves with 127.0.0.1 for tests/tracing and the dataplane tests; the pod runner's
leaf re-issued for a pod's loopback address)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from kvtrace.devstack.local_tls import issuers, local_tls, loopback_leaf
from kvtrace_operator import pki
from kvtrace_operator.render import render_collector_config, render_jaeger_config, tls
from kvtrace_operator.render.security import CLIENT_CA_DIR
from kvtrace_operator.spec import PipelineSpec, parse_pipeline

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)


def tp(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store"},
        "spec": spec,
    }


def test_every_server_gets_its_service_names_and_the_loopback_address(tmp_path: Path) -> None:
    pipe = tp(collector={"replicas": 2})
    local = local_tls(tmp_path, pipe)
    assert set(local.leaves) == {
        "traces-collector-tls",
        "traces-collector-sampling-tls",
        "traces-jaeger-tls",
    }
    ca = local.ca_file.read_text()
    assert pki.info(ca).is_ca
    for secret, directory in local.leaves.items():
        cert = (directory / "tls.crt").read_text()
        assert pki.signed_by(cert, ca) and pki.matches_key(
            cert, (directory / "tls.key").read_text()
        )
        assert (directory / "tls.key").stat().st_mode & 0o077 == 0
        expected = {
            leaf["secret"]: set(leaf["dnsNames"]) for leaf in tls.leaves(pipe, _defaults(pipe))
        }
        assert set(pki.info(cert).dns_names) == expected[secret], secret
        assert _ips(cert) == ["127.0.0.1"], secret
    assert (local.edge_leaf(), local.sampling_leaf(), local.jaeger_leaf()) == (
        "traces-collector-tls",
        "traces-collector-sampling-tls",
        "traces-jaeger-tls",
    )


def _defaults(pipe: dict[str, Any]) -> PipelineSpec:
    return parse_pipeline(pipe["spec"])


def _ips(cert_pem: str) -> list[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


def test_use_files_points_only_the_mount_paths_at_the_local_files(tmp_path: Path) -> None:
    pipe = tp()
    local = local_tls(tmp_path, pipe)
    config = render_collector_config(pipe)
    localised = local.use_files(config, local.edge_leaf())
    http = localised["receivers"]["otlp"]["protocols"]["http"]["tls"]
    assert http["cert_file"] == str(local.leaves["traces-collector-tls"] / "tls.crt")
    assert localised["exporters"]["otlp_grpc/jaeger"]["tls"]["ca_file"] == str(local.ca_file)
    assert (
        localised["exporters"]["otlp_grpc/jaeger"]["tls"]["server_name_override"]
        == (config["exporters"]["otlp_grpc/jaeger"]["tls"]["server_name_override"])
    )
    jaeger = local.use_files(render_jaeger_config(pipe), local.jaeger_leaf())
    assert jaeger["receivers"]["otlp"]["protocols"]["grpc"]["tls"]["key_file"] == str(
        local.leaves["traces-jaeger-tls"] / "tls.key"
    )
    assert local.client_env(
        {"OTEL_EXPORTER_OTLP_CERTIFICATE": f"{CLIENT_CA_DIR}/ca.crt", "OTHER": "x"}
    ) == {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(local.ca_file), "OTHER": "x"}
    with pytest.raises(ValueError, match="no local leaf 'nope'"):
        local.use_files(config, "nope")


def test_tls_off_changes_nothing_and_mode_secret_is_the_callers(tmp_path: Path) -> None:
    plain = tp(security={"tls": {"enabled": False}})
    local = local_tls(tmp_path / "off", plain)
    assert not local.enabled and local.leaves == {}
    config = render_collector_config(plain)
    assert local.use_files(config, None) == config
    with pytest.raises(ValueError, match="TLS is off"):
        local.ca_file  # noqa: B018 - the property raises
    with pytest.raises(ValueError, match="mode secret serves the user's own certificate"):
        local_tls(tmp_path / "secret", tp(security={"tls": {"secretName": "mine"}}))


def test_a_served_leaf_is_reissued_for_the_pod_address_by_its_own_ca() -> None:
    ca = pki.make_ca("pipeline CA", NOW, datetime.timedelta(days=30))
    other = pki.make_ca("other CA", NOW, datetime.timedelta(days=30))
    leaf = pki.issue(
        ca, "traces-collector", ["traces-collector.store.svc"], NOW, datetime.timedelta(days=2)
    )
    again = loopback_leaf(
        leaf.cert_pem, [other, ca], "127.9.0.5", NOW + datetime.timedelta(hours=1)
    )
    assert again is not None and pki.signed_by(again.cert_pem, ca.cert_pem)
    assert _ips(again.cert_pem) == ["127.9.0.5"]
    before, after = pki.info(leaf.cert_pem), pki.info(again.cert_pem)
    assert after.dns_names == before.dns_names and after.common_name == before.common_name
    assert after.not_after == before.not_after  # the same end: renewal behaves as in the cluster
    assert pki.matches_key(again.cert_pem, again.key_pem)
    assert loopback_leaf(leaf.cert_pem, [other], "127.9.0.5", NOW) is None  # issuer key not here
    assert loopback_leaf(ca.cert_pem, [ca], "127.9.0.5", NOW) is None  # a CA is no server leaf
    assert (
        loopback_leaf(leaf.cert_pem, [ca], "127.9.0.5", NOW + datetime.timedelta(days=3)) is None
    )  # expired
    assert loopback_leaf("not a certificate", [ca], "127.9.0.5", NOW) is None


def test_issuers_are_the_ca_key_pairs_of_the_namespace_secrets() -> None:
    ca = pki.make_ca("current", NOW, datetime.timedelta(days=30))
    previous = pki.make_ca("previous", NOW, datetime.timedelta(days=30))
    leaf = pki.issue(ca, "x", ["x"], NOW, datetime.timedelta(days=1))
    secrets = [
        {
            "tls.crt": ca.cert_pem.encode(),
            "tls.key": ca.key_pem.encode(),
            "ca.crt": ca.cert_pem.encode(),
            "previous.crt": previous.cert_pem.encode(),
            "previous.key": previous.key_pem.encode(),
        },
        {"tls.crt": leaf.cert_pem.encode(), "tls.key": leaf.key_pem.encode()},  # a leaf: no issuer
        {"token": b"abc"},
        {"tls.crt": b"garbage", "tls.key": b"garbage"},
    ]
    assert sorted(pki.info(pair.cert_pem).common_name for pair in issuers(secrets)) == [
        "current",
        "previous",
    ]
