"""Authentication and TLS of the telemetry hop applications → collector
(``TracingPipeline.spec.security``; docs/security.md).

- ``auth``: the collector's edge receivers require ``authorization: Bearer TOKEN``
  (``bearertokenauth`` extension) and accept one token per consumer (render/consumer_tokens.py):
  the token file is mounted from the pipeline's token-set Secret ``NAME-otlp-tokens``, which
  the operator rewrites when consumers come and go; the extension re-reads the file when the
  kubelet updates it. KV pods get their KVCluster's own token as an environment variable
  (``valueFrom.secretKeyRef`` on ``CLUSTER-otlp-client-token``) and the header through
  ``$(VAR)`` expansion: a token is never in a ConfigMap, a pod spec or the checksum.
  Generated Secrets are rendered without data; the k8s layer fills the key marked by
  ``GENERATED_ANNOTATION`` when it creates the Secret and never touches it afterwards.
- ``tls``: the edge receivers serve a leaf certificate (render/tls.py: the managed CA's,
  cert-manager's or ``secretName``'s) and reload it; KV pods mount only the CA bundle and
  point ``OTEL_EXPORTER_OTLP_CERTIFICATE`` at it, with an ``https`` endpoint.

The sampling tier behind a load-balancing tier is reached only from that tier (its
NetworkPolicy) without auth, like Jaeger's OTLP port; both serve TLS in the managed and
certManager modes (render/tls.py).
"""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import consumer_tokens
from kvtrace_operator.render import tls as tls_render
from kvtrace_operator.render.consumer_tokens import (
    GENERATED_ANNOTATION as GENERATED_ANNOTATION,  # re-exported
)
from kvtrace_operator.render.names import name_of
from kvtrace_operator.render.tls import SERVING_DIR  # noqa: F401 (where the edge mounts its leaf)
from kvtrace_operator.spec import PipelineSpec
from kvtrace_operator.spec.common import TLS
from kvtrace_operator.spec.pipeline import PipelineAuth

AUTH_EXTENSION = "bearertokenauth/otlp"
AUTH_DIR = "/etc/otelcol-auth"
TOKEN_FILE = f"{AUTH_DIR}/token"
CLIENT_CA_DIR = "/etc/kvtrace-telemetry"
CLIENT_CA_FILE = f"{CLIENT_CA_DIR}/ca.crt"
TOKEN_ENV = "KVTRACE_OTLP_TOKEN"
TOKEN_KEY = consumer_tokens.TOKEN_KEY
TOKEN_COMPONENT = "otlp-token"
# Secret volumes a program re-reads when the kubelet updates them: a change of their Secret
# needs no rolling restart (the collector's token file, its serving certificate).
# The KV node re-reads its leaf, its CA bundle and its client tokens (render/kvsecurity.py).
RELOADED_VOLUMES = frozenset({"auth-token", "serving-cert", "kv-trust", "client-tokens"})


def auth(spec: PipelineSpec) -> PipelineAuth | None:
    """The auth settings when enabled, else None."""
    settings = spec.security.auth
    return settings if settings.enabled else None


def token_secret_name(pipeline_name: str) -> str:
    return consumer_tokens.pipeline_token_secret(pipeline_name)


def token_ref(spec: PipelineSpec, pipeline_name: str) -> dict[str, str]:
    """The Secret key holding the pipeline's own token (the operator's canary and
    self-tracing send it): ``tokenSecretRef``, else the generated Secret."""
    consumer = consumer_tokens.pipeline_consumer(spec.security.auth, pipeline_name)
    return {"name": consumer.secret, "key": consumer.key}


def token_secret(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, Any] | None:
    """The Secret the operator creates for an auth pipeline without ``tokenSecretRef``
    (metadata only: the token is generated once, when the Secret is created)."""
    settings = auth(spec)
    if settings is None or settings.token_secret_ref:
        return None
    return consumer_tokens.generated_secret(
        pipeline, token_secret_name(name_of(pipeline)), TOKEN_COMPONENT
    )


def pipeline_secrets(pipeline: dict[str, Any], spec: PipelineSpec) -> list[dict[str, Any]]:
    """The Secrets a pipeline with auth creates: its own token (without ``tokenSecretRef``),
    the declared consumers' generated tokens and the collector's token set (first in apply
    order: the collector mounts it)."""
    settings = auth(spec)
    if settings is None:
        return []
    own = token_secret(pipeline, spec)
    return [
        consumer_tokens.token_set(pipeline),
        *([own] if own else []),
        *consumer_tokens.generated_consumer_secrets(pipeline, settings),
    ]


def client_secret(cluster: dict[str, Any], pipeline: PipelineSpec | None) -> dict[str, Any] | None:
    """A traced KVCluster's own token Secret when its pipeline (typed spec, None when
    untraced) requires auth."""
    if pipeline is None or auth(pipeline) is None:
        return None
    return consumer_tokens.client_secret(cluster)


def tls(spec: PipelineSpec) -> TLS | None:
    """The TLS settings when enabled, else None."""
    settings = spec.security.tls
    return settings if settings.enabled else None


def scheme(spec: PipelineSpec) -> str:
    return "https" if tls(spec) else "http"


# ---- collector side -------------------------------------------------------------------------


def receiver_settings(spec: PipelineSpec) -> dict[str, Any]:
    """What every server protocol of an edge receiver gets (``auth``, ``tls``)."""
    result: dict[str, Any] = {}
    if auth(spec):
        result["auth"] = {"authenticator": AUTH_EXTENSION}
    if spec.security.tls.enabled:
        result["tls"] = tls_render.server_tls(spec.security.tls)
    return result


def edge_telemetry(spec: PipelineSpec, telemetry: dict[str, Any]) -> dict[str, Any]:
    """With auth, the edge's metrics at level ``detailed``: the HTTP and gRPC servers then
    count every request by status, so refused ones show up as
    ``http_server_request_duration_seconds_count{http_response_status_code="401"}`` and
    ``rpc_server_call_duration_seconds_count{rpc_response_status_code="UNAUTHENTICATED"}`` (names as
    collector v0.161 exposes them)."""
    if not auth(spec):
        return telemetry
    return {**telemetry, "metrics": {**telemetry["metrics"], "level": "detailed"}}


def extensions(spec: PipelineSpec) -> dict[str, Any]:
    return {AUTH_EXTENSION: {"filename": TOKEN_FILE}} if auth(spec) else {}


def collector_volumes(
    spec: PipelineSpec, pipeline_name: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Secret volumes (and mounts) of the edge tier: the token file (every consumer's token)."""
    volumes = []
    if auth(spec):
        volumes.append(
            (
                {
                    "name": "auth-token",
                    "secret": {
                        "secretName": consumer_tokens.token_set_secret(pipeline_name),
                        "items": [{"key": consumer_tokens.TOKEN_SET_KEY, "path": "token"}],
                    },
                },
                {"name": "auth-token", "mountPath": AUTH_DIR, "readOnly": True},
            )
        )
    return volumes  # TLS volumes: render/tls.py


# ---- client (KV pod) side -------------------------------------------------------------------


def client_env(spec: PipelineSpec, cluster_name: str) -> list[dict[str, Any]]:
    """The KVCluster's own token (from its Secret), the header built from it, the CA file."""
    result: list[dict[str, Any]] = []
    if auth(spec):
        result.append(
            {
                "name": TOKEN_ENV,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": consumer_tokens.client_token_secret(cluster_name),
                        "key": TOKEN_KEY,
                    }
                },
            }
        )
        # W3C-baggage format, value URL-encoded (%20 is the space); the kubelet expands $(...).
        result.append(
            {
                "name": "OTEL_EXPORTER_OTLP_HEADERS",
                "value": f"authorization=Bearer%20$({TOKEN_ENV})",
            }
        )
    if tls(spec):
        result.append({"name": "OTEL_EXPORTER_OTLP_CERTIFICATE", "value": CLIENT_CA_FILE})
    return result


def client_volumes(
    spec: PipelineSpec, pipeline_name: str
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Only the CA bundle (the user's Secret's ``ca.crt``, or the managed trust bundle): a
    client never sees a private key."""
    settings = tls(spec)
    if settings is None:
        return []
    return [tls_render.trust_volume(*tls_render.client_ca(settings, pipeline_name), CLIENT_CA_DIR)]
