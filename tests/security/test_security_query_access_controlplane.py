"""Query access on the local cluster (docs/security.md, "Access to trace data"): the CRD's
``spec.jaeger.query.auth`` rules on the real API server (server-side dry run), and a
pipeline with ``mode: basic`` end to end: the operator generates the credentials Secret,
the real Jaeger behind its pod (the pod runner) refuses queries without them, and the
operator's TraceDelivery canary, which sends them, reports Delivered."""

from __future__ import annotations

import base64
import json
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.shared.endpoints import resolve_url
from kvtrace.shared.jaeger_client import JaegerClient, JaegerError

pytestmark = pytest.mark.controlplane

_delivery = runpy.run_path(
    str(
        Path(__file__).resolve().parents[1]
        / "operator"
        / "controlplane"
        / "test_operator_trace_delivery.py"
    ),
    run_name="query_access_delivery_helpers",
)
start_backends, delivery, pipeline = (
    _delivery["start_backends"],
    _delivery["delivery"],
    _delivery["pipeline"],
)
TIMEOUT: float = _delivery["TIMEOUT"]
FAST_CANARY: tuple[str, ...] = _delivery["FAST_CANARY"]
FIELD = "spec.jaeger.query.auth"


def tp(auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "qa"},
        "spec": {"jaeger": {"query": {"auth": auth}}},
    }


def dry_run(kubectl: Any, obj: dict[str, Any]) -> Any:
    return kubectl(
        "-n",
        "default",
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=yaml.safe_dump(obj),
        check=False,
    )


ISSUER = "https://idp.example.com/realms/kvtrace"
MALFORMED = [
    ("unknown-mode", {"mode": "ldap"}, f"{FIELD}.mode", "Unsupported value"),
    (
        "ref-with-mode-none",
        {"credentialsSecretRef": {"name": "u", "key": "htpasswd"}},
        f"{FIELD}.credentialsSecretRef",
        "credentialsSecretRef is not used with mode none",
    ),
    (
        "ref-without-key",
        {"mode": "basic", "credentialsSecretRef": {"name": "u"}},
        f"{FIELD}.credentialsSecretRef.key",
        "Required value",
    ),
    (
        "oidc-without-issuer",
        {"mode": "oidc"},
        f"{FIELD}.oidc",
        "oidc (issuer, audience) is required with mode oidc",
    ),
    (
        "oidc-without-audience",
        {"mode": "oidc", "oidc": {"issuer": ISSUER}},
        f"{FIELD}.oidc.audience",
        "Required value",
    ),
    (
        "oidc-http-issuer",
        {"mode": "oidc", "oidc": {"issuer": "http://idp.example.com", "audience": "a"}},
        f"{FIELD}.oidc.issuer",
        "should match",
    ),
    (
        "oidc-with-bearer",
        {"mode": "bearer", "oidc": {"issuer": ISSUER, "audience": "a"}},
        f"{FIELD}.oidc",
        "oidc is only used with mode oidc",
    ),
    (
        "claim-without-value",
        {
            "mode": "oidc",
            "oidc": {"issuer": ISSUER, "audience": "a", "requiredClaim": {"name": "groups"}},
        },
        f"{FIELD}.oidc.requiredClaim.value",
        "Required value",
    ),
    (
        "proxy-image-with-basic",
        {"mode": "basic", "proxyImage": "r/x:1"},
        f"{FIELD}.proxyImage",
        "proxyImage is only used with modes bearer and oidc",
    ),
]


@pytest.mark.parametrize(
    ("case", "auth", "field", "phrase"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_bad_query_auth_is_rejected_by_the_crd_naming_the_field(
    crds: Any, kubectl: Any, case: str, auth: dict[str, Any], field: str, phrase: str
) -> None:
    proc = dry_run(kubectl, tp(auth))
    assert proc.returncode != 0, f"{case}: accepted"
    assert f"{field}:" in proc.stderr and phrase in proc.stderr, proc.stderr


def test_query_auth_defaults_to_none_and_accepts_every_mode(crds: Any, kubectl: Any) -> None:
    default = json.loads(dry_run(kubectl, {**tp({}), "spec": {}}).stdout)
    assert default["spec"]["jaeger"]["query"] == {"auth": {"mode": "none"}}
    for auth in (
        {"mode": "basic"},
        {"mode": "basic", "credentialsSecretRef": {"name": "u", "key": "htpasswd"}},
        {"mode": "bearer"},
        {
            "mode": "bearer",
            "proxyImage": "registry.local/kvtrace-operator:dev",
            "credentialsSecretRef": {"name": "readers", "key": "tokens"},
        },
        {
            "mode": "oidc",
            "oidc": {
                "issuer": ISSUER,
                "audience": "jaeger-query",
                "requiredClaim": {"name": "groups", "value": "trace-readers"},
                "caSecretRef": {"name": "idp-ca", "key": "ca.crt"},
            },
        },
    ):
        proc = dry_run(kubectl, tp(auth))
        assert proc.returncode == 0, proc.stderr


def ready_with_generated(
    kube_ns: Any, poll: Any, auth: dict[str, Any], tls: dict[str, Any], secret_name: str, key: str
) -> tuple[dict[str, Any], str]:
    """Apply the pipeline with query ``auth`` and ``tls``, wait until it is Ready and the
    operator has generated ``secret_name``: that Secret and its decoded ``key``."""
    kube_ns.apply(pipeline(jaeger={"query": {"auth": auth}}, security={"tls": tls}))
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True"),
        timeout=TIMEOUT,
        message="pipeline Ready",
    )
    secret = poll(
        lambda: kube_ns.get("secret", secret_name),
        timeout=TIMEOUT,
        message=f"the generated Secret {secret_name}",
    )
    return secret, base64.b64decode(secret["data"][key]).decode()


def delivered_through_query_auth(
    kube_ns: Any, pod_runner: Any, endpoint_map: Any, poll: Any, secret: str
) -> tuple[Any, str, str]:
    """Start Jaeger and the collector behind the pods, wait for TraceDelivery True/Delivered
    (the canary's lookup sends the query credentials), check ``secret`` is nowhere in the
    pipeline; (Jaeger's pod runner, the canary's trace id, the local query URL)."""
    jaeger, _ = start_backends(pod_runner, endpoint_map, poll)
    delivered = poll(
        lambda: delivery(kube_ns, "True", "Delivered"),
        timeout=TIMEOUT,
        message="TraceDelivery True/Delivered: the canary sends the query credentials",
    )
    assert "found in Jaeger at http://traces-jaeger-query." in delivered["message"]
    status = kube_ns.get("tracingpipeline", "traces")
    assert secret not in json.dumps(status)
    return (
        jaeger,
        status["status"]["traceDelivery"]["traceID"],
        resolve_url(status["status"]["endpoints"]["jaegerQuery"], endpoint_map.path),
    )


@pytest.mark.operator_args(*FAST_CANARY)
def test_basic_query_auth_end_to_end_with_the_canary(
    operator: Any, kube_ns: Any, pod_runner: Any, endpoint_map: Any, poll: Any
) -> None:
    secret, credentials = ready_with_generated(
        kube_ns,
        poll,
        {"mode": "basic"},
        {"enabled": False},
        "traces-jaeger-query-credentials",
        "credentials",
    )
    user, password = credentials.split(":", 1)
    assert user == "kvtrace" and len(password) >= 43
    assert secret["metadata"]["ownerReferences"][0]["name"] == "traces"
    config_map = kube_ns.get("configmap", "traces-jaeger")
    assert password not in json.dumps(config_map)
    service = kube_ns.get("service", "traces-jaeger-query")
    assert service["spec"]["type"] == "ClusterIP"

    _, trace_id, query = delivered_through_query_auth(
        kube_ns, pod_runner, endpoint_map, poll, password
    )
    with pytest.raises(JaegerError, match="401"):
        JaegerClient(query, timeout=5, credentials="").trace(trace_id)
    with pytest.raises(JaegerError, match="401: .*credentials were refused"):
        JaegerClient(query, timeout=5, credentials=f"kvtrace:{password}x").trace(trace_id)
    found = JaegerClient(query, timeout=5, credentials=credentials).trace(trace_id)
    assert found is not None and found.services == {"kvtrace-operator-canary"}


@pytest.mark.operator_args(*FAST_CANARY)
def test_bearer_query_auth_end_to_end_through_the_proxy_sidecar(
    operator: Any, kube_ns: Any, pod_runner: Any, endpoint_map: Any, poll: Any
) -> None:
    """mode bearer: the operator generates the token Secret and renders the query-proxy
    sidecar; the pod runner starts Jaeger (query servers on the pod's loopback) and the real
    proxy process from the rendered pod; the canary's lookup sends the token: Delivered."""
    _, token = ready_with_generated(
        kube_ns, poll, {"mode": "bearer"}, {"enabled": False}, "traces-jaeger-query-token", "token"
    )
    assert len(token) >= 43 and ":" not in token
    service = kube_ns.get("service", "traces-jaeger-query")
    assert [port["name"] for port in service["spec"]["ports"]] == ["query-http"]
    containers = kube_ns.get("deployment", "traces-jaeger")["spec"]["template"]["spec"][
        "containers"
    ]
    assert [c["name"] for c in containers] == ["jaeger", "query-proxy"]

    jaeger, trace_id, query = delivered_through_query_auth(
        kube_ns, pod_runner, endpoint_map, poll, token
    )
    with pytest.raises(JaegerError, match="401: .*bearer token and the token is needed"):
        JaegerClient(query, timeout=5, token="", credentials="").trace(trace_id)
    with pytest.raises(JaegerError, match="401: .*the token was refused"):
        JaegerClient(query, timeout=5, token=token + "x").trace(trace_id)
    found = JaegerClient(query, timeout=5, token=token).trace(trace_id)
    assert found is not None and found.services == {"kvtrace-operator-canary"}
    # Jaeger's own query server listens on the pod's loopback only: the proxy is the way in.
    [pod_name] = jaeger.pods()
    assert "query-proxy" in jaeger.processes(pod_name)


@pytest.mark.operator_args(*FAST_CANARY)
def test_oidc_query_auth_with_tls_end_to_end(
    operator: Any, kube_ns: Any, pod_runner: Any, endpoint_map: Any, poll: Any, tmp_path: Path
) -> None:
    """mode oidc with managed TLS, against a small https issuer standing in for the user's
    identity provider (its CA from a Secret): the proxy in the Jaeger pod serves the Jaeger
    leaf; the canary's lookup verifies it and sends the generated static token without a
    query error; a JWT of the issuer with the required group gets in, one without does not."""
    from urllib.parse import urlsplit

    from oidc_issuer import Issuer, SigningKey, claims, mint

    with Issuer(tmp_path, [SigningKey.new("ec-1", "ES256")]).running() as issuer:
        kube_ns.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "idp-ca"},
                "data": {"ca.crt": base64.b64encode(issuer.ca_file.read_bytes()).decode()},
            }
        )
        oidc = {
            "issuer": issuer.url,
            "audience": "jaeger-query",
            "caSecretRef": {"name": "idp-ca", "key": "ca.crt"},
            "requiredClaim": {"name": "groups", "value": "trace-readers"},
        }
        # The generated static token is the canary's.
        _, static = ready_with_generated(
            kube_ns,
            poll,
            {"mode": "oidc", "oidc": oidc},
            {"enabled": True, "mode": "managed"},
            "traces-jaeger-query-token",
            "token",
        )
        start_backends(pod_runner, endpoint_map, poll)

        def looked_up() -> dict[str, Any] | None:
            return delivery(kube_ns, "True", "Delivered") or delivery(
                kube_ns, "False", "NotFoundInJaeger"
            )

        # (Locally the collector's TLS hop to Jaeger fails its name check against the pod
        # runner's address, so the canary may not arrive: the lookup is what is checked here.)
        cond = poll(
            looked_up, timeout=TIMEOUT, message="the canary looked up through the proxy over TLS"
        )
        assert "https://traces-jaeger-query." in cond["message"], cond["message"]
        assert "Jaeger query error" not in cond["message"], cond["message"]

        endpoint = kube_ns.get("tracingpipeline", "traces")["status"]["endpoints"]["jaegerQuery"]
        trust = base64.b64decode(
            kube_ns.get("secret", "traces-tls-trust")["data"]["ca.crt"]
        ).decode()

        def client(token: str) -> JaegerClient:
            return JaegerClient(
                resolve_url(endpoint, endpoint_map.path),
                timeout=5,
                token=token,
                credentials="",
                ca_pem=trust,
                server_hostname=urlsplit(endpoint).hostname,
            )

        key = issuer.keys[0]
        assert isinstance(client(static).services(), list)
        assert isinstance(
            client(
                mint(key, claims(issuer.url, "jaeger-query", groups=["trace-readers"]))
            ).services(),
            list,
        )
        with pytest.raises(JaegerError, match="claim groups does not hold the required value"):
            client(mint(key, claims(issuer.url, "jaeger-query", groups=["dev"]))).services()
        with pytest.raises(JaegerError, match="401: .*the token is needed"):
            client("").services()
