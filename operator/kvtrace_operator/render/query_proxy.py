"""The ``query-proxy`` sidecar of the Jaeger pod (``spec.jaeger.query.auth.mode`` bearer and
oidc; render/query_access.py holds the modes, Secrets and validation): ``kvtrace query-proxy``
from the operator image serves the query port, Jaeger's query servers listen on loopback.

The image: the pipeline's ``proxyImage``, else ``default_image``, the image the operator
itself runs (``kvtrace operator run --query-proxy-image``, which the chart sets from the
Deployment's own image), else the built-in OPERATOR_IMAGE."""

from __future__ import annotations

import copy
from typing import Any

from kvtrace_operator.render import names, podspec, tls
from kvtrace_operator.render.images import OPERATOR_IMAGE
from kvtrace_operator.render.query_access import (
    OIDC,
    TOKENS_FILE,
    Volume,
    mode,
    proxied,
    settings,
    volumes,
)

CONTAINER = "query-proxy"
LOOPBACK = "127.0.0.1"
# Jaeger's own query HTTP server behind the proxy (pod-local only).
UPSTREAM_PORT = 16687
OIDC_CA_VOLUME = "query-oidc-ca"
OIDC_CA_DIR = "/etc/jaeger-query-oidc-ca"
# The proxy answers it itself, without a token (kvtrace.queryproxy.server.HEALTH_PATH).
HEALTH_PATH = "/healthz"
RESOURCES = {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "192Mi"}}


def loopback_endpoints() -> tuple[str, str]:
    """(HTTP, gRPC) endpoints of Jaeger's query servers behind the proxy: pod-local only."""
    return f"{LOOPBACK}:{UPSTREAM_PORT}", f"{LOOPBACK}:{names.JAEGER_QUERY_GRPC_PORT}"


def proxy_volumes(spec: dict[str, Any], pipeline_name: str) -> list[Volume]:
    """What the proxy container mounts: the tokens file and the OIDC issuer's CA."""
    if not proxied(spec):
        return []
    found = volumes(spec, pipeline_name)
    ca = (settings(spec) or {}).get("oidc", {}).get("caSecretRef") if mode(spec) == OIDC else None
    if ca:
        found.append(
            (
                {
                    "name": OIDC_CA_VOLUME,
                    "secret": {
                        "secretName": ca["name"],
                        "items": [{"key": ca["key"], "path": "ca.crt"}],
                    },
                },
                {"name": OIDC_CA_VOLUME, "mountPath": OIDC_CA_DIR, "readOnly": True},
            )
        )
    return found


def proxy_args(spec: dict[str, Any]) -> list[str]:
    auth = settings(spec) or {}
    args = [
        "--mode",
        auth["mode"],
        "--listen",
        f"0.0.0.0:{names.JAEGER_QUERY_HTTP_PORT}",
        "--upstream",
        f"http://{LOOPBACK}:{UPSTREAM_PORT}",
        "--tokens-file",
        TOKENS_FILE,
    ]
    if auth["mode"] == OIDC:
        oidc = auth["oidc"]
        args += ["--issuer", oidc["issuer"], "--audience", oidc["audience"]]
        if oidc.get("requiredClaim"):
            args += [
                "--required-claim",
                f"{oidc['requiredClaim']['name']}={oidc['requiredClaim']['value']}",
            ]
        if oidc.get("caSecretRef"):
            args += ["--oidc-ca-file", f"{OIDC_CA_DIR}/ca.crt"]
    if tls.every_hop(spec):
        args += [
            "--tls-cert-file",
            f"{tls.JAEGER_SERVING_DIR}/tls.crt",
            "--tls-key-file",
            f"{tls.JAEGER_SERVING_DIR}/tls.key",
        ]
    return args


def proxy_container(
    spec: dict[str, Any], mounts: list[dict[str, Any]], default_image: str = OPERATOR_IMAGE
) -> dict[str, Any] | None:
    """The ``query-proxy`` sidecar (bearer/oidc): ``proxyImage`` or ``default_image`` (the
    operator's own image) running ``kvtrace query-proxy``, restricted like every container,
    with ``mounts`` (its own volumes and, with TLS, Jaeger's serving certificate)."""
    if not proxied(spec):
        return None
    auth = settings(spec) or {}
    scheme = (
        "HTTPS" if tls.every_hop(spec) else "HTTP"
    )  # the kubelet does not verify the certificate

    def probe(period: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": HEALTH_PATH, "port": "query-http", "scheme": scheme},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        }

    return {
        "name": CONTAINER,
        "image": auth.get("proxyImage") or default_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["kvtrace", "query-proxy"],
        "args": proxy_args(spec),
        "ports": [podspec.port("query-http", names.JAEGER_QUERY_HTTP_PORT)],
        "livenessProbe": probe(10),
        "readinessProbe": probe(5),
        "volumeMounts": mounts,
        "securityContext": podspec.container_security_context(),
        "resources": copy.deepcopy(RESOURCES),
    }
