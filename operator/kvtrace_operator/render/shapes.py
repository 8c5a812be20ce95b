"""Type checks of a spec read from a file (the API server's schema does this for the
operator; ``kvtrace render`` must not crash on ``consistency: 5`` either)."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render.defaults import Each
from kvtrace_operator.render.errors import SpecError

OBJECT, LIST, STRING, BOOLEAN, INTEGER, NUMBER = (
    "an object",
    "a list",
    "a string",
    "true or false",
    "an integer",
    "a number",
)
STRINGS, STRING_MAP = "a list of strings", "an object of string values"

# spec.security.tls of both kinds (render/tls.py).
_TLS_OPTIONAL = {
    "security.tls.secretName": STRING,
    "security.tls.mode": STRING,
    "security.tls.issuerRef": OBJECT,
    "security.tls.issuerRef.name": STRING,
    "security.tls.issuerRef.kind": STRING,
    "security.tls.issuerRef.group": STRING,
}
# Optional fields without a default (so not in the defaults trees), by dotted path under spec.
KVCLUSTER_OPTIONAL = {
    "storage.storageClassName": STRING,
    "resources": OBJECT,
    "tracing": OBJECT,
    "tracing.pipelineRef": OBJECT,
    "tracing.pipelineRef.name": STRING,
    "tracing.serviceName": STRING,
    "scheduling.affinity": OBJECT,
    "scheduling.nodeSelector": OBJECT,
    "scheduling.tolerations": LIST,
    "scheduling.topologySpreadConstraints": LIST,
    "scheduling.priorityClassName": STRING,
    "security.auth.clients": LIST,
    **_TLS_OPTIONAL,
}
PIPELINE_OPTIONAL = {
    "sampling.keepErrors": BOOLEAN,
    "collector.resources": OBJECT,
    "jaeger.resources": OBJECT,
    "jaeger.storage.storageClassName": STRING,
    "jaeger.tenancy.tenants": STRINGS,
    "jaeger.query.auth.credentialsSecretRef": OBJECT,
    "jaeger.query.auth.credentialsSecretRef.name": STRING,
    "jaeger.query.auth.credentialsSecretRef.key": STRING,
    "redaction.blockedKeyPatterns": STRINGS,
    "redaction.blockedValues": STRINGS,
    "metrics.prometheus.resources": OBJECT,
    "metrics.external": OBJECT,
    "metrics.external.url": STRING,
    "metrics.external.otlpEndpoint": STRING,
    "security.auth.tokenSecretRef": OBJECT,
    "security.auth.tokenSecretRef.name": STRING,
    "security.auth.tokenSecretRef.key": STRING,
    "security.auth.consumers": LIST,
    **_TLS_OPTIONAL,
}
EXPORTER_OPTIONAL = {
    "name": STRING,
    "endpoint": STRING,
    "headers": STRING_MAP,
    "compression": STRING,
    "secretHeaders": LIST,
    "tls.caSecret": OBJECT,
    "tls.caSecret.name": STRING,
    "tls.caSecret.key": STRING,
}


def _kind_of(default: Any) -> str:
    if isinstance(default, bool):
        return BOOLEAN
    if isinstance(default, int):
        return INTEGER
    if isinstance(default, float):
        return NUMBER
    if isinstance(default, list):
        return STRINGS  # every list default is a list of strings
    if isinstance(default, dict):
        return OBJECT
    return STRING


def _matches(value: Any, kind: str) -> bool:
    checks = {
        OBJECT: lambda v: isinstance(v, dict),
        LIST: lambda v: isinstance(v, list),
        STRING: lambda v: isinstance(v, str),
        STRINGS: lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
        STRING_MAP: lambda v: (
            isinstance(v, dict) and all(isinstance(item, str) for item in v.values())
        ),
        BOOLEAN: lambda v: isinstance(v, bool),
        INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
        NUMBER: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    return bool(checks[kind](value))


def _expect(value: Any, kind: str, field: str) -> None:
    if not _matches(value, kind):
        raise SpecError(field, f"expected {kind}, got {value!r}")


def _lookup(spec: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    value: Any = spec
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def check_tree(tree: dict[str, Any], value: dict[str, Any], field: str) -> None:
    """Every defaulted field of ``value`` has the type of its default."""
    for key, default in tree.items():
        if key not in value:
            continue
        path = f"{field}.{key}"
        if isinstance(default, Each):
            _expect(value[key], LIST, path)
            for index, item in enumerate(value[key]):
                _expect(item, OBJECT, f"{path}[{index}]")
                check_tree(default, item, f"{path}[{index}]")
                check_optional(EXPORTER_OPTIONAL, item, f"{path}[{index}]")
        elif isinstance(default, dict):
            _expect(value[key], OBJECT, path)
            check_tree(default, value[key], path)
        else:
            _expect(value[key], _kind_of(default), path)


def check_optional(types: dict[str, str], spec: dict[str, Any], field: str) -> None:
    for dotted, kind in types.items():
        present, value = _lookup(spec, dotted)
        if present:
            _expect(value, kind, f"{field}.{dotted}")


def check_spec(
    resource: dict[str, Any], tree: dict[str, Any], optional: dict[str, str]
) -> dict[str, Any]:
    """The resource's spec (``{}`` when absent), checked against ``tree`` and ``optional``."""
    if not isinstance(resource.get("metadata"), dict):
        raise SpecError(
            "metadata", f"expected an object with a name, got {resource.get('metadata')!r}"
        )
    spec = resource.get("spec")
    if spec is None:
        return {}
    _expect(spec, OBJECT, "spec")
    check_tree(tree, spec, "spec")
    check_optional(optional, spec, "spec")
    return dict(spec)
