"""Who may read traces: authentication of Jaeger's query API (``spec.jaeger.query.auth``;
docs/security.md, "Query access").

Jaeger v2 (``jaeger`` v1.76.0) serves the UI and ``/api/v3`` (HTTP 16686) and the query gRPC
API (16685) through the collector's server settings, which take ``auth: {authenticator: X}``.
Of the server authenticators, that binary registers only ``basicauth`` (no
``bearertokenauth``, no ``oidc``), so bearer tokens and OIDC go through kvtrace's own proxy
(``kvtrace query-proxy``, src/kvtrace/queryproxy) in the Jaeger pod. The modes:

- ``none`` (default): no authentication; the NetworkPolicy (``spec.networkPolicy.queryAccess``)
  decides who may connect, and the query Services are ClusterIP only.
- ``basic``: HTTP Basic on both query ports (``basicauth/query`` extension). Its htpasswd file
  is one key of a Secret, mounted as a file (never in the ConfigMap): ``USER:PASSWORD`` lines,
  plain text (what kvtrace's own clients send; further lines may be hashed htpasswd entries).
  Without ``credentialsSecretRef`` the pipeline gets ``NAME-jaeger-query-credentials``, created
  once by the operator with ``kvtrace:RANDOM`` in key ``credentials`` (the same mechanism as
  the generated OTLP token), never rotated by itself. Jaeger reads the file only at start: a
  changed Secret rolls the Jaeger pod (render/secret_refs.py).
- ``bearer`` and ``oidc``: the ``query-proxy`` sidecar (render/query_proxy.py) serves 16686 and
  forwards authenticated requests to Jaeger's query HTTP server, which listens on
  127.0.0.1:16687 only; the gRPC query server listens on 127.0.0.1:16685 only (no Service
  port: the proxy speaks HTTP/1.1). ``bearer``: one token per line of a Secret key
  (``credentialsSecretRef``, else ``NAME-jaeger-query-token``, generated once), re-read by the
  proxy when it changes (no restart). ``oidc``: a JWT of ``oidc.issuer`` for ``oidc.audience``
  (optionally ``oidc.requiredClaim``), or one of those static tokens (the operator's canary
  uses the generated one).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kvtrace_operator.render import names, tls
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.labels import JAEGER, child_metadata
from kvtrace_operator.render.names import jaeger as jaeger_name
from kvtrace_operator.render.names import name_of
from kvtrace_operator.render.security import GENERATED_ANNOTATION
from kvtrace_operator.spec import PipelineSpec
from kvtrace_operator.spec.pipeline import OIDCAuth, QueryAuth

NONE, BASIC, BEARER, OIDC = "none", "basic", "bearer", "oidc"
MODES = (NONE, BASIC, BEARER, OIDC)
PROXY_MODES = (BEARER, OIDC)
EXTENSION = "basicauth/query"
CREDENTIALS_DIR = "/etc/jaeger-query-auth"
HTPASSWD_FILE = f"{CREDENTIALS_DIR}/htpasswd"
TOKENS_FILE = f"{CREDENTIALS_DIR}/tokens"
CREDENTIALS_KEY = "credentials"
TOKEN_KEY = "token"
GENERATED_USER = "kvtrace"
# On a generated Secret: what goes before the random token (so the key is a htpasswd line).
GENERATED_PREFIX_ANNOTATION = "kvtrace.dev/generated-prefix"
VOLUME = "query-credentials"  # basic: Jaeger reads it at start (a change rolls the pod)
TOKENS_VOLUME = "auth-token"  # bearer/oidc: the proxy re-reads it (security.RELOADED_VOLUMES)
FIELD = "spec.jaeger.query.auth"


def settings(spec: PipelineSpec) -> QueryAuth | None:
    """``spec.jaeger.query.auth`` when it asks for authentication (and Jaeger is on), else None."""
    auth = spec.jaeger.query_auth
    return auth if spec.jaeger.enabled and auth.mode != NONE else None


def mode(spec: PipelineSpec) -> str:
    auth = settings(spec)
    return auth.mode if auth else NONE


def proxied(spec: PipelineSpec) -> bool:
    """Whether the query-proxy sidecar serves the query port (modes bearer and oidc)."""
    return mode(spec) in PROXY_MODES


# ---- validation -------------------------------------------------------------------------------


def _string(value: str | None, field: str, expected: str) -> str:
    if value is None or not value.strip():
        raise SpecError(field, f"expected {expected}, got {value!r}")
    return value


def _validate_oidc(oidc: OIDCAuth | None) -> None:
    field = f"{FIELD}.oidc"
    if oidc is None:
        raise SpecError(
            field, "required with mode oidc: {issuer: https://..., audience: CLIENT_ID}"
        )
    issuer = _string(
        oidc.issuer, f"{field}.issuer", "the https URL of the OIDC issuer (its tokens' iss)"
    )
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise SpecError(
            f"{field}.issuer", f"expected an https URL without query or fragment, got {issuer!r}"
        )
    _string(
        oidc.audience, f"{field}.audience", "the audience (client id) tokens must be issued for"
    )
    if oidc.required_claim is not None:
        claim_name, claim_value = oidc.required_claim
        name = _string(claim_name, f"{field}.requiredClaim.name", "a claim name, e.g. groups")
        if "=" in name:
            raise SpecError(
                f"{field}.requiredClaim.name", f"expected a claim name without '=', got {name!r}"
            )
        _string(claim_value, f"{field}.requiredClaim.value", "the value the claim must hold")
    ref = oidc.ca_secret_ref
    if ref is not None and not (ref.name and ref.key):
        raise SpecError(
            f"{field}.caSecretRef", f"expected {{name: SECRET, key: KEY}}, got {ref.as_dict()!r}"
        )


def validate(spec: PipelineSpec) -> None:
    """The mode and what goes with it (the CRD's rules, again for files; the shape of
    ``credentialsSecretRef``: render/validate.py)."""
    auth = spec.jaeger.query_auth
    if auth.credentials_secret_ref is not None and auth.mode == NONE:
        raise SpecError(
            f"{FIELD}.credentialsSecretRef", "not used with mode none: set a mode or remove it"
        )
    if auth.mode == OIDC:
        _validate_oidc(auth.oidc)
    elif auth.oidc is not None:
        raise SpecError(f"{FIELD}.oidc", f"only used with mode oidc, got mode {auth.mode}")
    if auth.proxy_image is not None:
        _string(auth.proxy_image, f"{FIELD}.proxyImage", "an image reference")
        if auth.mode not in PROXY_MODES:
            raise SpecError(
                f"{FIELD}.proxyImage",
                f"only used with modes bearer and oidc, got mode {auth.mode}",
            )


# ---- Secrets ----------------------------------------------------------------------------------


def credentials_secret_name(pipeline_name: str) -> str:
    return f"{jaeger_name(pipeline_name)}-query-credentials"


def token_secret_name(pipeline_name: str) -> str:
    return f"{jaeger_name(pipeline_name)}-query-token"


def credentials_ref(spec: PipelineSpec, pipeline_name: str) -> dict[str, str] | None:
    """The Secret key holding the credentials (``credentialsSecretRef`` or the generated one:
    USER:PASSWORD lines for basic, tokens for bearer/oidc), None without query auth."""
    auth = settings(spec)
    if auth is None:
        return None
    ref = auth.credentials_secret_ref
    if ref:
        return ref.as_dict()
    if auth.mode == BASIC:
        return {"name": credentials_secret_name(pipeline_name), "key": CREDENTIALS_KEY}
    return {"name": token_secret_name(pipeline_name), "key": TOKEN_KEY}


def credentials_secret(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, Any] | None:
    """The Secret the operator creates without ``credentialsSecretRef`` (metadata only: the
    k8s layer fills ``kvtrace:RANDOM`` (basic) or ``RANDOM`` once, when it creates it)."""
    auth = settings(spec)
    if auth is None or auth.credentials_secret_ref:
        return None
    pipeline_name = name_of(pipeline)
    if auth.mode == BASIC:
        metadata = child_metadata(pipeline, credentials_secret_name(pipeline_name), JAEGER)
        metadata["annotations"] = {
            GENERATED_ANNOTATION: CREDENTIALS_KEY,
            GENERATED_PREFIX_ANNOTATION: f"{GENERATED_USER}:",
        }
    else:
        metadata = child_metadata(pipeline, token_secret_name(pipeline_name), JAEGER)
        metadata["annotations"] = {GENERATED_ANNOTATION: TOKEN_KEY}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}


# ---- Jaeger's config ----------------------------------------------------------------------------


def extensions(spec: PipelineSpec) -> dict[str, Any]:
    """The Jaeger config's authenticator extension (basic only)."""
    return {EXTENSION: {"htpasswd": {"file": HTPASSWD_FILE}}} if mode(spec) == BASIC else {}


def server_settings(spec: PipelineSpec) -> dict[str, Any]:
    """What ``jaeger_query``'s ``http`` and ``grpc`` servers get besides their endpoint:
    the authenticator (basic), their leaf certificate (TLS on every hop, unless the proxy
    terminates TLS)."""
    extra: dict[str, Any] = {}
    if mode(spec) == BASIC:
        extra["auth"] = {"authenticator": EXTENSION}
    if spec.security.tls.every_hop and not proxied(spec):
        extra["tls"] = tls.server_tls(spec.security.tls, tls.JAEGER_SERVING_DIR)
    return extra


def query_ports(spec: PipelineSpec) -> list[tuple[str, int]]:
    """The query Service's ports: HTTP only behind the proxy, else HTTP and gRPC."""
    ports = [("query-http", names.JAEGER_QUERY_HTTP_PORT)]
    return ports if proxied(spec) else ports + [("query-grpc", names.JAEGER_QUERY_GRPC_PORT)]


# ---- volumes ------------------------------------------------------------------------------------

Volume = tuple[dict[str, Any], dict[str, Any]]


def volumes(spec: PipelineSpec, pipeline_name: str) -> list[Volume]:
    """The credentials file, only the credentials key of the Secret, read-only: the htpasswd
    of Jaeger (basic), or the proxy's tokens file (bearer/oidc)."""
    ref = credentials_ref(spec, pipeline_name)
    if ref is None:
        return []
    name, path = (VOLUME, "htpasswd") if mode(spec) == BASIC else (TOKENS_VOLUME, "tokens")
    return [
        (
            {
                "name": name,
                "secret": {"secretName": ref["name"], "items": [{"key": ref["key"], "path": path}]},
            },
            {"name": name, "mountPath": CREDENTIALS_DIR, "readOnly": True},
        )
    ]


def jaeger_volumes(spec: PipelineSpec, pipeline_name: str) -> list[Volume]:
    """What the Jaeger container mounts for query access (the htpasswd file of basic)."""
    return volumes(spec, pipeline_name) if mode(spec) == BASIC else []
