"""Authentication and TLS of the telemetry hop applications → collector
(``TracingPipeline.spec.security``; docs/security.md).

- ``auth``: the collector's edge receivers require ``authorization: Bearer TOKEN``
  (``bearertokenauth`` extension, token file mounted from ``tokenSecretRef``; the extension
  re-reads the file when the kubelet updates it). KV pods get the token as an environment
  variable from the same Secret key (``valueFrom.secretKeyRef``) and the header through
  ``$(VAR)`` expansion: the token is never in a ConfigMap, a pod spec or the checksum.
  Without ``tokenSecretRef`` the pipeline gets ``NAME-otlp-token``, a Secret the operator
  creates once with a random token (:func:`token_secret` renders it without data; the k8s
  layer fills the key marked by ``GENERATED_ANNOTATION`` when it creates the Secret and never
  touches it afterwards).
- ``tls``: the edge receivers serve a leaf certificate (render/tls.py: the managed CA's,
  cert-manager's or ``secretName``'s) and reload it; KV pods mount only the CA bundle and
  point ``OTEL_EXPORTER_OTLP_CERTIFICATE`` at it, with an ``https`` endpoint.

The sampling tier behind a load-balancing tier is reached only from that tier (its
NetworkPolicy) without auth, like Jaeger's OTLP port; both serve TLS in the managed and
certManager modes (render/tls.py).
"""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import tls as tls_render
from kvtrace_operator.render.labels import child_metadata
from kvtrace_operator.render.names import name_of
from kvtrace_operator.render.tls import SERVING_DIR  # noqa: F401 (where the edge mounts its leaf)

AUTH_EXTENSION = "bearertokenauth/otlp"
AUTH_DIR = "/etc/otelcol-auth"
TOKEN_FILE = f"{AUTH_DIR}/token"
CLIENT_CA_DIR = "/etc/kvtrace-telemetry"
CLIENT_CA_FILE = f"{CLIENT_CA_DIR}/ca.crt"
TOKEN_ENV = "KVTRACE_OTLP_TOKEN"
TOKEN_KEY = "token"
TOKEN_COMPONENT = "otlp-token"
# On a rendered Secret: the key the operator fills with a random token when it creates the
# Secret (never afterwards: no silent rotation).
GENERATED_ANNOTATION = "kvtrace.dev/generated-key"
# Secret volumes a program re-reads when the kubelet updates them: a change of their Secret
# needs no rolling restart (the collector's token file, its serving certificate).
RELOADED_VOLUMES = frozenset({"auth-token", "serving-cert"})


def auth(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The auth settings when enabled, else None."""
    settings = spec.get("security", {}).get("auth", {})
    return settings if settings.get("enabled") else None


def token_secret_name(pipeline_name: str) -> str:
    return f"{pipeline_name}-{TOKEN_COMPONENT}"


def token_ref(spec: dict[str, Any], pipeline_name: str) -> dict[str, str]:
    """The Secret key holding the token: ``tokenSecretRef``, else the generated Secret."""
    ref = (auth(spec) or {}).get("tokenSecretRef")
    return dict(ref) if ref else {"name": token_secret_name(pipeline_name), "key": TOKEN_KEY}


def token_secret(pipeline: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any] | None:
    """The Secret the operator creates for an auth pipeline without ``tokenSecretRef``
    (metadata only: the token is generated once, when the Secret is created)."""
    settings = auth(spec)
    if settings is None or settings.get("tokenSecretRef"):
        return None
    metadata = child_metadata(pipeline, token_secret_name(name_of(pipeline)), TOKEN_COMPONENT)
    metadata["annotations"] = {GENERATED_ANNOTATION: TOKEN_KEY}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}


def tls(spec: dict[str, Any]) -> dict[str, Any] | None:
    settings = spec.get("security", {}).get("tls", {})
    return settings if settings.get("enabled") else None


def scheme(spec: dict[str, Any]) -> str:
    return "https" if tls(spec) else "http"


# ---- collector side -------------------------------------------------------------------------

def receiver_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """What every server protocol of an edge receiver gets (``auth``, ``tls``)."""
    result: dict[str, Any] = {}
    if auth(spec):
        result["auth"] = {"authenticator": AUTH_EXTENSION}
    if tls(spec):
        result["tls"] = tls_render.server_tls(spec)
    return result


def edge_telemetry(spec: dict[str, Any], telemetry: dict[str, Any]) -> dict[str, Any]:
    """With auth, the edge's metrics at level ``detailed``: the HTTP and gRPC servers then
    count every request by status, so refused ones show up as
    ``http_server_request_duration_count{http_response_status_code="401"}`` and
    ``rpc_server_call_duration_count{rpc_response_status_code="UNAUTHENTICATED"}`` (names as
    collector v0.161 exposes them)."""
    if not auth(spec):
        return telemetry
    return {**telemetry, "metrics": {**telemetry["metrics"], "level": "detailed"}}


def extensions(spec: dict[str, Any]) -> dict[str, Any]:
    return {AUTH_EXTENSION: {"filename": TOKEN_FILE}} if auth(spec) else {}


def collector_volumes(spec: dict[str, Any], pipeline_name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Secret volumes (and mounts) of the edge tier: the token file."""
    volumes = []
    if auth(spec):
        ref = token_ref(spec, pipeline_name)
        volumes.append((
            {"name": "auth-token", "secret": {"secretName": ref["name"],
                                              "items": [{"key": ref["key"], "path": "token"}]}},
            {"name": "auth-token", "mountPath": AUTH_DIR, "readOnly": True}))
    return volumes  # TLS volumes: render/tls.py


# ---- client (KV pod) side -------------------------------------------------------------------

def client_env(spec: dict[str, Any], pipeline_name: str) -> list[dict[str, Any]]:
    """The token (from the Secret), the header built from it, the CA file."""
    result: list[dict[str, Any]] = []
    if auth(spec):
        ref = token_ref(spec, pipeline_name)
        result.append({"name": TOKEN_ENV,
                       "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}}})
        # W3C-baggage format, value URL-encoded (%20 is the space); the kubelet expands $(...).
        result.append({"name": "OTEL_EXPORTER_OTLP_HEADERS",
                       "value": f"authorization=Bearer%20$({TOKEN_ENV})"})
    if tls(spec):
        result.append({"name": "OTEL_EXPORTER_OTLP_CERTIFICATE", "value": CLIENT_CA_FILE})
    return result


def client_volumes(spec: dict[str, Any], pipeline_name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Only the CA bundle (the user's Secret's ``ca.crt``, or the managed trust bundle): a
    client never sees a private key."""
    if not tls(spec):
        return []
    return [tls_render.trust_volume(*tls_render.client_ca(spec, pipeline_name), CLIENT_CA_DIR)]
