"""Authentication end to end on the local cluster (docs/security.md): a pipeline with ``auth.enabled``
and no Secret of the user's; the operator generates the token Secret, and the pod runner runs
the real Jaeger, the real collector and a real KV member behind their pods, with the rendered
pod specs as the kubelet would (the token file from the Secret volume, ``KVTRACE_OTLP_TOKEN``
from ``secretKeyRef``, ``$(VAR)`` expanded into ``OTEL_EXPORTER_OTLP_HEADERS``). The member's
spans reach Jaeger; a request without the token is refused by that same collector. TLS is on
too (the default, managed CA): the member exports over https, trusting the mounted bundle, and
the request without the token verifies the collector's certificate as well."""

from __future__ import annotations

import base64
import http.client
import ssl
import urllib.parse
import urllib.request
from typing import Any

import pytest

from kvtrace.devstack import tools
from kvtrace.shared.endpoints import resolve_url
from kvtrace.shared.jaeger_client import JaegerClient

pytestmark = pytest.mark.controlplane

TIMEOUT = 120.0
PROGRAMS = {"otelcol": "otelcol-kvtrace", "jaeger": "jaeger"}


def backend_command(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    return [str(tools.binary(PROGRAMS[container["name"]]))]


def post_without_token(url: str, ca_pem: str) -> int:
    """POST an empty export over TLS, verifying the server against ``ca_pem``, without a token."""
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "https", url
    conn = http.client.HTTPSConnection(
        parts.hostname or "",
        parts.port or 443,
        timeout=5,
        context=ssl.create_default_context(cadata=ca_pem),
    )
    try:
        conn.request(
            "POST", "/v1/traces", body=b"", headers={"Content-Type": "application/x-protobuf"}
        )
        return conn.getresponse().status
    finally:
        conn.close()


def test_members_export_with_the_generated_token_and_others_are_refused(
    operator: Any, kube_ns: Any, poll: Any, pod_runner: Any, endpoint_map: Any
) -> None:
    kube_ns.apply(
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "TracingPipeline",
            "metadata": {"name": "traces"},
            "spec": {
                "sampling": {"mode": "head", "ratio": 1},
                "security": {"auth": {"enabled": True}},
            },
        },
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
    for kind, name in (("tracingpipeline", "traces"), ("kvcluster", "kv")):
        poll(
            lambda k=kind, n=name: kube_ns.condition_is(k, n, "Ready", "True"),
            timeout=TIMEOUT,
            message=f"{kind}/{name} Ready",
        )
    assert kube_ns.get("secret", "traces-otlp-token") is not None

    pod_runner("app.kubernetes.io/component=jaeger", resolve_command=backend_command)
    poll(
        lambda: any(key.startswith("traces-jaeger-otlp.") for key in endpoint_map.entries()),
        timeout=TIMEOUT,
        message="Jaeger in the endpoint map",
    )
    pod_runner("app.kubernetes.io/component=collector", resolve_command=backend_command)
    members = pod_runner("app.kubernetes.io/component=kvnode")
    members.wait_running(1, timeout=TIMEOUT)

    status = kube_ns.get("tracingpipeline", "traces")["status"]
    collector = resolve_url(status["endpoints"]["otlpHttp"], endpoint_map.path)
    trust = base64.b64decode(kube_ns.get("secret", "traces-tls-trust")["data"]["ca.crt"]).decode()
    poll(
        lambda: _status_or_none(collector, trust) == 401,
        timeout=TIMEOUT,
        message="the collector behind its pod refuses a request without the token",
    )

    client = resolve_url(
        kube_ns.get("kvcluster", "kv")["status"]["endpoints"]["client"], endpoint_map.path
    )
    # The KV cluster's own TLS and client token (on by default): its bundle and generated token.
    kv_trust = ssl.create_default_context(
        cadata=base64.b64decode(kube_ns.get("secret", "kv-kv-tls-trust")["data"]["ca.crt"]).decode()
    )
    kv_token = base64.b64decode(
        kube_ns.get("secret", "kv-kv-client-token")["data"]["token"]
    ).decode()

    def put() -> bool:
        request = urllib.request.Request(
            f"{client}/v1/kv/auth-e2e",
            data=b"value",
            method="PUT",
            headers={"Authorization": f"Bearer {kv_token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=kv_trust) as response:
                return bool(200 <= response.status < 300)
        except OSError:
            return False

    poll(
        put,
        timeout=TIMEOUT,
        message=f"a PUT to the member ({client}); its log:\n{members.logs(members_name(members))}",
    )
    # Jaeger's query port serves its leaf too (TLS default): the same bundle verifies it.
    jaeger = JaegerClient(
        resolve_url(status["endpoints"]["jaegerQuery"], endpoint_map.path), timeout=5, ca_pem=trust
    )
    poll(
        lambda: jaeger.find_traces("kv"),
        timeout=TIMEOUT,
        message=f"the member's spans in Jaeger (member log:\n{members.logs(members_name(members))})",
    )


def _status_or_none(url: str, ca_pem: str) -> int | None:
    try:
        return post_without_token(url, ca_pem)
    except OSError:
        return None


def members_name(runner: Any) -> str:
    return next(iter(runner.pods()), "")
