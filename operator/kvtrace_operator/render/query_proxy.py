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
from kvtrace_operator.spec import PipelineSpec
from kvtrace_operator.spec.pipeline import OIDCAuth

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


def _oidc(spec: PipelineSpec) -> OIDCAuth | None:
    auth = settings(spec)
    return auth.oidc if auth is not None and auth.mode == OIDC else None


def proxy_volumes(spec: PipelineSpec, pipeline_name: str) -> list[Volume]:
    """What the proxy container mounts: the tokens file and the OIDC issuer's CA."""
    if not proxied(spec):
        return []
    found = volumes(spec, pipeline_name)
    oidc = _oidc(spec)
    ca = oidc.ca_secret_ref if oidc is not None else None
    if ca:
        found.append(
            (
                {
                    "name": OIDC_CA_VOLUME,
                    "secret": {
                        "secretName": ca.name,
                        "items": [{"key": ca.key, "path": "ca.crt"}],
                    },
                },
                {"name": OIDC_CA_VOLUME, "mountPath": OIDC_CA_DIR, "readOnly": True},
            )
        )
    return found


def proxy_args(spec: PipelineSpec) -> list[str]:
    args = [
        "--mode",
        mode(spec),
        "--listen",
        f"0.0.0.0:{names.JAEGER_QUERY_HTTP_PORT}",
        "--upstream",
        f"http://{LOOPBACK}:{UPSTREAM_PORT}",
        "--tokens-file",
        TOKENS_FILE,
    ]
    oidc = _oidc(spec)
    if oidc is not None:
        args += ["--issuer", oidc.issuer, "--audience", oidc.audience]
        if oidc.required_claim:
            args += ["--required-claim", "=".join(oidc.required_claim)]
        if oidc.ca_secret_ref:
            args += ["--oidc-ca-file", f"{OIDC_CA_DIR}/ca.crt"]
    if spec.security.tls.every_hop:
        args += [
            "--tls-cert-file",
            f"{tls.JAEGER_SERVING_DIR}/tls.crt",
            "--tls-key-file",
            f"{tls.JAEGER_SERVING_DIR}/tls.key",
        ]
    return args


def proxy_container(
    spec: PipelineSpec, mounts: list[dict[str, Any]], image: str = OPERATOR_IMAGE
) -> dict[str, Any] | None:
    """The ``query-proxy`` sidecar (bearer/oidc): ``image`` (the pipeline's ``proxyImage``,
    else the operator's own image) running ``kvtrace query-proxy``, restricted like every
    container, with ``mounts`` (its own volumes and, with TLS, Jaeger's serving certificate)."""
    if not proxied(spec):
        return None
    # The kubelet does not verify the certificate.
    scheme = "HTTPS" if spec.security.tls.every_hop else "HTTP"

    def probe(period: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": HEALTH_PATH, "port": "query-http", "scheme": scheme},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        }

    return {
        "name": CONTAINER,
        "image": image,
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
