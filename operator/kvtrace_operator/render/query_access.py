"""Who may read traces: authentication of Jaeger's query API (``spec.jaeger.query.auth``;
docs/security.md, "Query access").

Jaeger v2 (``jaeger`` v1.76.0) serves the UI and ``/api/v3`` (HTTP 16686) and the query gRPC
API (16685) through the collector's server settings, which take ``auth: {authenticator: X}``.
Of the server authenticators, that binary registers only ``basicauth`` (its components list
has no ``bearertokenauth`` and no ``oidc``), so the modes are:

- ``none`` (default): no authentication; the NetworkPolicy (``spec.networkPolicy.queryAccess``)
  decides who may connect, and the query Services are ClusterIP only.
- ``basic``: HTTP Basic on both query ports (``basicauth/query`` extension). Its htpasswd file
  is one key of a Secret, mounted as a file (never in the ConfigMap): ``USER:PASSWORD`` lines,
  plain text (what kvtrace's own clients send; further lines may be hashed htpasswd entries).
  Without ``credentialsSecretRef`` the pipeline gets ``NAME-jaeger-query-credentials``, created
  once by the operator with ``kvtrace:RANDOM`` in key ``credentials`` (the same mechanism as
  the generated OTLP token, render/security.py), never rotated by itself. Jaeger reads the file
  only at start: a changed Secret rolls the Jaeger pod (render/secret_refs.py).
"""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.labels import JAEGER, child_metadata
from kvtrace_operator.render.names import jaeger as jaeger_name
from kvtrace_operator.render.names import name_of
from kvtrace_operator.render.security import GENERATED_ANNOTATION

MODES = ("none", "basic")
BASIC = "basic"
EXTENSION = "basicauth/query"
CREDENTIALS_DIR = "/etc/jaeger-query-auth"
HTPASSWD_FILE = f"{CREDENTIALS_DIR}/htpasswd"
CREDENTIALS_KEY = "credentials"
GENERATED_USER = "kvtrace"
# On a generated Secret: what goes before the random token (so the key is a htpasswd line).
GENERATED_PREFIX_ANNOTATION = "kvtrace.dev/generated-prefix"
VOLUME = "query-credentials"
FIELD = "spec.jaeger.query.auth"


def settings(spec: dict[str, Any]) -> dict[str, Any] | None:
    """``spec.jaeger.query.auth`` when it asks for authentication (and Jaeger is on), else None."""
    jaeger = spec["jaeger"]
    auth = jaeger["query"]["auth"]
    return auth if jaeger["enabled"] and auth["mode"] != "none" else None


def validate(spec: dict[str, Any]) -> None:
    """The mode, and no ``credentialsSecretRef`` without it (its shape: render/validate.py)."""
    auth = spec["jaeger"]["query"]["auth"]
    if auth["mode"] not in MODES:
        raise SpecError(f"{FIELD}.mode", f"expected one of {', '.join(MODES)} (the jaeger binary has "
                        f"no bearertokenauth or oidc extension), got {auth['mode']!r}")
    ref = auth.get("credentialsSecretRef")
    if ref is None:
        return
    if auth["mode"] == "none":
        raise SpecError(f"{FIELD}.credentialsSecretRef", "only used with mode basic: set mode: basic or remove it")


def credentials_secret_name(pipeline_name: str) -> str:
    return f"{jaeger_name(pipeline_name)}-query-credentials"


def credentials_ref(spec: dict[str, Any], pipeline_name: str) -> dict[str, str] | None:
    """The Secret key holding the credentials (``credentialsSecretRef`` or the generated one),
    None without query auth."""
    auth = settings(spec)
    if auth is None:
        return None
    ref = auth.get("credentialsSecretRef")
    return dict(ref) if ref else {"name": credentials_secret_name(pipeline_name), "key": CREDENTIALS_KEY}


def credentials_secret(pipeline: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any] | None:
    """The Secret the operator creates for ``basic`` without ``credentialsSecretRef``
    (metadata only: the k8s layer fills ``kvtrace:RANDOM`` once, when it creates it)."""
    auth = settings(spec)
    if auth is None or auth.get("credentialsSecretRef"):
        return None
    metadata = child_metadata(pipeline, credentials_secret_name(name_of(pipeline)), JAEGER)
    metadata["annotations"] = {GENERATED_ANNOTATION: CREDENTIALS_KEY,
                               GENERATED_PREFIX_ANNOTATION: f"{GENERATED_USER}:"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}


def extensions(spec: dict[str, Any]) -> dict[str, Any]:
    """The Jaeger config's authenticator extension (none without query auth)."""
    return {EXTENSION: {"htpasswd": {"file": HTPASSWD_FILE}}} if settings(spec) else {}


def server_settings(spec: dict[str, Any]) -> dict[str, Any]:
    """What ``jaeger_query``'s ``http`` and ``grpc`` servers get."""
    return {"auth": {"authenticator": EXTENSION}} if settings(spec) else {}


def volumes(spec: dict[str, Any], pipeline_name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The htpasswd file: only the credentials key of the Secret, read-only."""
    ref = credentials_ref(spec, pipeline_name)
    if ref is None:
        return []
    return [({"name": VOLUME, "secret": {"secretName": ref["name"], "items": [{"key": ref["key"], "path": "htpasswd"}]}},
             {"name": VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True})]
