"""TLS certificates on the real API server (docs/security.md "TLS"): the CRD's rules
for ``spec.security.tls``, the operator's managed CA (Secrets created, a leaf due for renewal
renewed, valid ones untouched, nothing rolled), and cert-manager mode against a schema-only
copy of cert-manager's Certificate CRD (no cert-manager controller runs here)."""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.devstack.operator_fixtures import Kube
from kvtrace_operator import pki
from kvtrace_operator.render import render_pipeline, tls

pytestmark = pytest.mark.controlplane

CERTIFICATE_CRD = Path(__file__).parent / "data" / "cert-manager-certificates-crd.yaml"


def tp(name: str = "traces", namespace: str = "default", **tls_settings: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "sampling": {"mode": "head"},
            "security": {"tls": {"enabled": True, **tls_settings}},
        },
    }


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def patch_until(
    kube: Kube, poll: Any, secret: str, values: dict[str, str], done: Any, message: str
) -> Any:
    """Patch ``values`` into ``secret`` and wait for ``done()`` (truthy); patch again whenever a
    reconcile that had read the Secret before the patch wrote it back meanwhile."""
    patch = json.dumps(
        {"data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}}
    )

    def attempt() -> Any:
        result = done()
        if not result and all(
            decoded(kube.get("secret", secret) or {"data": {}}).get(key) != value
            for key, value in values.items()
        ):
            kube.run("patch", "secret", secret, "--type=merge", "-p", patch)
        return result

    return poll(attempt, timeout=60, message=message)


def checksum_of(kube: Kube, deployment: str) -> str:
    obj = kube.get("deployment", deployment)
    assert obj is not None
    return str(obj["spec"]["template"]["metadata"]["annotations"]["kvtrace.dev/config-checksum"])


# ---- the CRD's rules ------------------------------------------------------------------------

BAD = [
    ("mode", {"mode": "vault"}, "spec.security.tls.mode", "Unsupported value"),
    (
        "secret-name-with-managed",
        {"mode": "managed", "secretName": "x"},
        "spec.security.tls.secretName",
        "secretName is used only by mode secret",
    ),
    (
        "cert-manager-without-issuer",
        {"mode": "certManager"},
        "spec.security.tls.issuerRef",
        "issuerRef is required with mode certManager",
    ),
    (
        "renew-after-expiry",
        {"renewBefore": "3000h"},
        "spec.security.tls.renewBefore",
        "renewBefore must be less than duration",
    ),
    (
        "ca-window",
        {"caRenewBefore": "1000h"},
        "spec.security.tls.caRenewBefore",
        "caRenewBefore must be more than twice renewBefore",
    ),
    (
        "too-short",
        {"duration": "500ms"},
        "spec.security.tls.duration",
        "duration must be at least 1s",
    ),
    (
        "issuer-kind",
        {"mode": "certManager", "issuerRef": {"name": "i", "kind": "Vault"}},
        "spec.security.tls.issuerRef.kind",
        "Unsupported value",
    ),
]


@pytest.mark.parametrize(("case", "settings", "field", "phrase"), BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
def test_bad_tls_input_is_rejected_naming_the_field(
    crds: list[str],
    kubectl: Any,
    case: str,
    settings: dict[str, Any],
    field: str,
    phrase: str,
    enabled: bool,
) -> None:
    proc = kubectl(
        "-n",
        "default",
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(tp(**settings, enabled=enabled)),
        check=False,
    )
    assert proc.returncode != 0, f"{case}: accepted"
    assert f"{field}:" in proc.stderr and phrase in proc.stderr, proc.stderr


def test_the_old_enabled_and_secret_name_shape_is_still_accepted(
    crds: list[str], kubectl: Any
) -> None:
    proc = kubectl(
        "-n",
        "default",
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=yaml.safe_dump(tp(secretName="collector-tls")),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["spec"]["security"]["tls"]["secretName"] == "collector-tls"


# ---- managed CA -----------------------------------------------------------------------------

MANAGED_SECRETS = {
    "traces-tls-ca": "Opaque",
    "traces-tls-trust": "Opaque",
    "traces-collector-tls": "kubernetes.io/tls",
    "traces-jaeger-tls": "kubernetes.io/tls",
}


def test_the_operator_creates_the_ca_and_leaves_renews_a_due_leaf_and_leaves_valid_ones_alone(
    operator: Any, kube_ns: Kube, poll: Any
) -> None:
    kube_ns.apply(tp(namespace=kube_ns.namespace))
    pipeline = poll(lambda: kube_ns.get("tracingpipeline", "traces"), message="the pipeline")
    secrets = poll(
        lambda: (
            {name: s for name in MANAGED_SECRETS if (s := kube_ns.get("secret", name))}
            if all(kube_ns.get("secret", name) for name in MANAGED_SECRETS)
            else None
        ),
        timeout=60,
        message="the CA, trust and leaf Secrets",
    )
    for name, secret in secrets.items():
        assert secret["type"] == MANAGED_SECRETS[name]
        owner = secret["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("TracingPipeline", pipeline["metadata"]["uid"])
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kvtrace-operator"
    ca = decoded(secrets["traces-tls-ca"])
    assert pki.info(ca["tls.crt"]).is_ca
    assert decoded(secrets["traces-tls-trust"]) == {"ca.crt": ca["tls.crt"]}  # the bundle, no key
    edge = decoded(secrets["traces-collector-tls"])
    ns = kube_ns.namespace
    assert set(pki.info(edge["tls.crt"]).dns_names) == set(tls.dns_names("traces-collector", ns))
    assert pki.signed_by(edge["tls.crt"], ca["tls.crt"]) and edge["ca.crt"] == ca["tls.crt"]
    # Jaeger's leaf serves its OTLP port and its query port (or the query proxy beside it).
    assert set(pki.info(decoded(secrets["traces-jaeger-tls"])["tls.crt"]).dns_names) == {
        *tls.dns_names("traces-jaeger-otlp", ns),
        *tls.dns_names("traces-jaeger-query", ns),
    }
    poll(lambda: kube_ns.get("deployment", "traces-collector"), message="the collector Deployment")
    status = poll(
        lambda: (kube_ns.get("tracingpipeline", "traces") or {}).get("status", {}).get("tls"),
        message="status.tls",
    )
    assert status["mode"] == "managed" and [c["commonName"] for c in status["trusted"]] == [
        pki.info(ca["tls.crt"]).common_name
    ]
    assert [c["secret"] for c in status["certificates"]] == [
        "traces-collector-tls",
        "traces-jaeger-tls",
    ]
    before = {name: s["metadata"]["resourceVersion"] for name, s in secrets.items()}
    rolled_from = checksum_of(kube_ns, "traces-collector")

    # A leaf within renewBefore (720h): replaced by one the same CA signed, valid one more hour.
    now = datetime.datetime.now(datetime.UTC)
    due = pki.issue(
        pki.KeyPair(ca["tls.crt"], ca["tls.key"]),
        "traces-collector",
        list(tls.dns_names("traces-collector", ns)),
        now,
        datetime.timedelta(hours=1),
    )
    original = edge["tls.crt"]

    def renewed() -> dict[str, str] | None:
        data = decoded(kube_ns.get("secret", "traces-collector-tls") or {"data": {}})
        return data if data.get("tls.crt") not in (None, due.cert_pem, original) else None

    fresh = patch_until(
        kube_ns,
        poll,
        "traces-collector-tls",
        {"tls.crt": due.cert_pem, "tls.key": due.key_pem},
        renewed,
        "the due leaf renewed",
    )
    info = pki.info(fresh["tls.crt"])
    assert info.not_after - now > datetime.timedelta(hours=2000)  # a full duration (2160h)
    assert pki.signed_by(fresh["tls.crt"], ca["tls.crt"])
    poll(
        lambda: (
            kube_ns.get("tracingpipeline", "traces")["status"]["tls"]["certificates"][0]["notAfter"]
            == info.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        timeout=30,
        message="status.tls shows the renewed leaf",
    )
    # Valid ones untouched: same resourceVersion, and the collector did not roll (it reloads).
    for name in ("traces-tls-ca", "traces-tls-trust", "traces-jaeger-tls"):
        assert kube_ns.get("secret", name)["metadata"]["resourceVersion"] == before[name], name
    assert checksum_of(kube_ns, "traces-collector") == rolled_from
    events = poll(
        lambda: (
            [
                e
                for e in kube_ns.list("events")
                if e["reason"] == "CertificatesRenewed"
                and "traces-collector-tls: expiring" in e["message"]
            ]
            and kube_ns.list("events")
        ),
        timeout=10,
        message="a CertificatesRenewed event",
    )
    assert not any("PRIVATE KEY" in e.get("message", "") for e in events)


def test_a_ca_rotation_rolls_the_bundle_consumers_and_not_jaeger(
    operator: Any, kube_ns: Kube, poll: Any
) -> None:
    """The CA within caRenewBefore: a new CA joins the bundle, so the collector and the KV
    members (which read the bundle at start) roll; Jaeger (trusts nothing) does not."""
    kube_ns.apply(
        tp(namespace=kube_ns.namespace),
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "kv"},
            "spec": {
                "replicas": 1,
                "replicationFactor": 1,
                "tracing": {"pipelineRef": {"name": "traces"}},
            },
        },
    )
    poll(
        lambda: kube_ns.get("statefulset", "kv") and kube_ns.get("deployment", "traces-jaeger"),
        timeout=60,
        message="the members and Jaeger",
    )

    def template(kind: str, name: str) -> str:
        obj = kube_ns.get(kind, name)
        assert obj is not None
        return str(
            obj["spec"]["template"]["metadata"]["annotations"]["kvtrace.dev/config-checksum"]
        )

    before = {
        (kind, name): template(kind, name)
        for kind, name in (
            ("statefulset", "kv"),
            ("deployment", "traces-collector"),
            ("deployment", "traces-jaeger"),
        )
    }
    # A CA with 1000h left (< caRenewBefore, 4320h; > renewBefore, 720h), as if it had served
    # for years.
    now = datetime.datetime.now(datetime.UTC)
    ageing = pki.make_ca(
        "ageing CA", now - datetime.timedelta(days=1000), datetime.timedelta(days=1000, hours=1000)
    )

    def rotated() -> list[pki.CertInfo] | None:
        trust = decoded(kube_ns.get("secret", "traces-tls-trust") or {"data": {}}).get("ca.crt", "")
        certs = pki.bundle_info(trust)
        return certs if len(certs) == 2 else None

    bundle = patch_until(
        kube_ns,
        poll,
        "traces-tls-ca",
        {"tls.crt": ageing.cert_pem, "tls.key": ageing.key_pem},
        rotated,
        "a bundle of the new CA and the ageing one",
    )
    assert bundle[1].common_name == "ageing CA" and bundle[0].not_after - now > datetime.timedelta(
        days=1000
    )
    for kind, name in (("statefulset", "kv"), ("deployment", "traces-collector")):
        poll(
            lambda: template(kind, name) != before[(kind, name)],  # noqa: B023 - polled in this round
            timeout=30,
            message=f"{kind}/{name} rolled",
        )
    assert template("deployment", "traces-jaeger") == before[("deployment", "traces-jaeger")]
    # The leaves are signed by the ageing CA, the one signing until half-way through
    # caRenewBefore (the patch made the originals' issuer unknown, so they were re-issued).
    leaf = decoded(kube_ns.get("secret", "traces-collector-tls"))
    assert pki.signed_by(leaf["tls.crt"], ageing.cert_pem)


def test_a_deleted_leaf_secret_comes_back(operator: Any, kube_ns: Kube, poll: Any) -> None:
    kube_ns.apply(tp(namespace=kube_ns.namespace))
    first = poll(
        lambda: kube_ns.get("secret", "traces-jaeger-tls"), timeout=60, message="the Jaeger leaf"
    )
    kube_ns.run("delete", "secret", "traces-jaeger-tls")
    again = poll(
        lambda: kube_ns.get("secret", "traces-jaeger-tls"),
        timeout=30,
        message="the leaf re-created",
    )
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    ca = decoded(kube_ns.get("secret", "traces-tls-ca"))
    assert pki.signed_by(decoded(again)["tls.crt"], ca["tls.crt"])


def test_turning_tls_off_prunes_the_managed_secrets_and_status(
    operator: Any, kube_ns: Kube, poll: Any
) -> None:
    kube_ns.apply(tp(namespace=kube_ns.namespace))
    poll(
        lambda: all(kube_ns.get("secret", name) for name in MANAGED_SECRETS),
        timeout=60,
        message="the managed Secrets",
    )
    poll(
        lambda: (kube_ns.get("tracingpipeline", "traces") or {}).get("status", {}).get("tls"),
        message="status.tls",
    )
    kube_ns.apply(tp(namespace=kube_ns.namespace, enabled=False))
    poll(
        lambda: not any(kube_ns.get("secret", name) for name in MANAGED_SECRETS),
        timeout=60,
        message="the managed Secrets pruned",
    )
    poll(
        lambda: "tls" not in (kube_ns.get("tracingpipeline", "traces") or {}).get("status", {}),
        timeout=30,
        message="status.tls removed",
    )
    collector = yaml.safe_load(kube_ns.get("configmap", "traces-collector")["data"]["config.yaml"])  # type: ignore[index]
    assert "tls" not in collector["receivers"]["otlp"]["protocols"]["grpc"]


# ---- cert-manager -----------------------------------------------------------------------------


def test_cert_manager_mode_without_cert_manager_is_a_clear_condition(
    operator: Any, kube_ns: Kube, poll: Any, local_cluster: Any
) -> None:
    absent = local_cluster.kubectl("get", "crd", "certificates.cert-manager.io", check=False)
    assert absent.returncode != 0, "this test needs a cluster without cert-manager's CRD"
    kube_ns.apply(
        tp(namespace=kube_ns.namespace, mode="certManager", issuerRef={"name": "ca-issuer"})
    )
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "False", "InvalidSpec"),
        timeout=30,
        message="Ready=False/InvalidSpec",
    )
    message = kube_ns.condition("tracingpipeline", "traces", "Ready")["message"]
    assert "spec.security.tls.mode" in message and "certificates.cert-manager.io" in message
    assert kube_ns.get("deployment", "traces-collector") is None  # nothing applied


@pytest.fixture
def certificate_crd(local_cluster: Any) -> Iterator[None]:
    local_cluster.kubectl("apply", "--server-side", "-f", str(CERTIFICATE_CRD))
    local_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/certificates.cert-manager.io"
    )
    try:
        yield
    finally:
        local_cluster.kubectl("delete", "-f", str(CERTIFICATE_CRD), "--wait=true", check=False)


def test_rendered_certificates_are_accepted_and_their_secrets_feed_the_trust_bundle(
    certificate_crd: None, operator: Any, kube_ns: Kube, poll: Any
) -> None:
    ns = kube_ns.namespace
    pipe = tp(
        namespace=ns, mode="certManager", issuerRef={"name": "ca-issuer", "kind": "ClusterIssuer"}
    )
    pipe["spec"].update(sampling={"mode": "production"}, collector={"replicas": 2})
    # The renderer's objects pass the real API server's validation of the CRD's schema.
    certificates = [obj for obj in render_pipeline(pipe) if obj["kind"] == "Certificate"]
    assert len(certificates) == 3
    proc = kube_ns.run(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(certificates), check=False
    )
    assert proc.returncode == 0, proc.stderr

    kube_ns.apply(pipe)
    names = ["traces-collector-tls", "traces-collector-sampling-tls", "traces-jaeger-tls"]
    applied = poll(
        lambda: [c for name in names if (c := kube_ns.get("certificate", name))] or None,
        timeout=60,
        message="the Certificates applied by the operator",
    )
    poll(
        lambda: len([n for n in names if kube_ns.get("certificate", n)]) == 3,
        timeout=30,
        message="3 Certificates",
    )
    uid = kube_ns.get("tracingpipeline", "traces")["metadata"]["uid"]
    assert all(c["metadata"]["ownerReferences"][0]["uid"] == uid for c in applied)
    # No cert-manager controller: the Secrets are missing, so the workloads wait (a condition).
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "SecretsReady", "False"),
        timeout=30,
        message="SecretsReady=False while cert-manager has not issued",
    )
    assert kube_ns.get("deployment", "traces-collector") is None

    # Play cert-manager: write the three Secrets (tls.crt, tls.key, ca.crt) from one CA.
    now = datetime.datetime.now(datetime.UTC)
    issuer = pki.make_ca("cluster issuer", now, datetime.timedelta(days=30))
    for cert in certificates:
        leaf = pki.issue(
            issuer,
            cert["spec"]["commonName"],
            cert["spec"]["dnsNames"],
            now,
            datetime.timedelta(days=1),
        )
        kube_ns.run(
            "create",
            "secret",
            "generic",
            cert["spec"]["secretName"],
            "--type=kubernetes.io/tls",
            f"--from-literal=tls.crt={leaf.cert_pem}",
            f"--from-literal=tls.key={leaf.key_pem}",
            f"--from-literal=ca.crt={issuer.cert_pem}",
        )
    trust = poll(
        lambda: kube_ns.get("secret", "traces-tls-trust"), timeout=60, message="the trust bundle"
    )
    assert decoded(trust) == {"ca.crt": issuer.cert_pem}
    poll(
        lambda: kube_ns.get("deployment", "traces-collector-sampling"),
        timeout=60,
        message="the workloads applied once the Secrets exist",
    )


def test_leaving_cert_manager_mode_or_tls_deletes_the_pipelines_certificates(
    certificate_crd: None, operator: Any, kube_ns: Kube, poll: Any
) -> None:
    """certManager -> managed deletes the pipeline's Certificates (the managed CA takes over
    their Secrets); certManager again re-creates them; TLS off deletes them again. A
    Certificate the pipeline does not own stays."""
    ns = kube_ns.namespace
    cert_manager = {
        "mode": "certManager",
        "issuerRef": {"name": "ca-issuer", "kind": "ClusterIssuer"},
    }
    names = ["traces-collector-tls", "traces-jaeger-tls"]

    def certificates() -> list[str]:
        return [name for name in names if kube_ns.get("certificate", name)]

    kube_ns.apply(tp(namespace=ns, **cert_manager))
    poll(lambda: certificates() == names, timeout=60, message="the pipeline's Certificates")
    foreign = next(
        obj
        for obj in render_pipeline(tp(namespace=ns, **cert_manager))
        if obj["kind"] == "Certificate"
    )
    foreign["metadata"]["name"] = foreign["spec"]["secretName"] = "someone-elses"
    kube_ns.apply(foreign)  # the same labels, but no owner reference to the pipeline

    kube_ns.apply(tp(namespace=ns))  # mode managed
    poll(lambda: not certificates(), timeout=60, message="the Certificates deleted in mode managed")
    poll(lambda: kube_ns.get("secret", "traces-tls-ca"), timeout=60, message="the managed CA")
    events = poll(
        lambda: [
            e
            for e in kube_ns.list("events")
            if e["reason"] == "CertificatesRenewed"
            and "Certificate traces-jaeger-tls: deleted" in e["message"]
        ],
        timeout=30,
        message="the deletion in an event",
    )
    assert "not rendered in mode managed" in events[0]["message"]

    kube_ns.apply(tp(namespace=ns, **cert_manager))
    poll(
        lambda: certificates() == names,
        timeout=60,
        message="the Certificates back in mode certManager",
    )
    kube_ns.apply(tp(namespace=ns, enabled=False, **cert_manager))
    poll(lambda: not certificates(), timeout=60, message="the Certificates deleted with TLS off")
    assert kube_ns.get("certificate", "someone-elses") is not None


# ---- the operator's certificates carry real traffic -------------------------------------------


@pytest.mark.operator_args("--canary-interval", "2", "--canary-timeout", "4")
def test_the_operator_canary_crosses_both_tls_hops_into_jaeger(
    operator: Any, kube_ns: Kube, pod_runner: Any, endpoint_map: Any, poll: Any
) -> None:
    """Jaeger and the collector run behind their pods (pod runner: the real binaries with the
    rendered config and the Secret volumes the operator wrote). The operator's canary trace
    goes over TLS to the collector (trusting NAME-tls-trust, verifying the Service name), the
    collector exports it over TLS to Jaeger (server_name_override keeps the Service name
    although the pod runner rewrote the address), and the canary is found in Jaeger."""
    from kvtrace.devstack import tools

    pipe = tp(namespace=kube_ns.namespace)
    pipe["spec"]["sampling"] = {"decisionWait": "1s", "latencyThreshold": "200ms"}
    kube_ns.apply(pipe)
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True"),
        timeout=90,
        message="pipeline Ready",
    )
    programs = {"otelcol": "otelcol-kvtrace", "jaeger": "jaeger"}

    def command(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        return [str(tools.binary(programs[container["name"]]))]

    pod_runner("app.kubernetes.io/component=jaeger", resolve_command=command)
    poll(
        lambda: any(key.startswith("traces-jaeger-otlp.") for key in endpoint_map.entries()),
        timeout=90,
        message="Jaeger in the endpoint map",
    )
    pod_runner("app.kubernetes.io/component=collector", resolve_command=command)
    delivered = poll(
        lambda: kube_ns.condition_is(
            "tracingpipeline", "traces", "TraceDelivery", "True", "Delivered"
        ),
        timeout=90,
        message="TraceDelivery True/Delivered through both TLS hops",
    )
    assert delivered
    message = kube_ns.condition("tracingpipeline", "traces", "TraceDelivery")["message"]  # type: ignore[index]
    assert "https://traces-collector." in message, message
