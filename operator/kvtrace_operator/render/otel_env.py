"""The standard OTel environment (docs/design.md section 4) of KV pods and of any application.

The KV node runs under ``opentelemetry-instrument``: these variables are its whole tracing
configuration. Python's OTLP default protocol is http/protobuf, so the endpoint is the
collector Service on port 4318.
"""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import names, sampling, security
from kvtrace_operator.render.validate import validate_pipeline
from kvtrace_operator.spec import KVClusterSpec, PipelineSpec, parse_kvcluster


def env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def downward_env() -> list[dict[str, Any]]:
    """POD_NAME and NODE_NAME from the downward API (``$(POD_NAME)`` in args and attributes)."""
    return [field_env("POD_NAME", "metadata.name"), field_env("NODE_NAME", "spec.nodeName")]


def exporter_env(pipeline: dict[str, Any], spec: PipelineSpec) -> list[dict[str, Any]]:
    """Exporter, propagation and sampler variables every application of ``pipeline`` (its
    typed ``spec``) shares."""
    host = names.service_dns(names.collector(names.name_of(pipeline)), names.namespace_of(pipeline))
    variables = [
        env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            f"{security.scheme(spec)}://{host}:{names.OTLP_HTTP_PORT}",
        ),
        env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        env("OTEL_TRACES_EXPORTER", "otlp"),
        # The pipeline carries traces only: without these the SDK would also push metrics
        # and logs to the collector, which has no pipeline for them.
        env("OTEL_METRICS_EXPORTER", "none"),
        env("OTEL_LOGS_EXPORTER", "none"),
        env("OTEL_PROPAGATORS", "tracecontext,baggage"),
    ]
    variables += [env(name, value) for name, value in sampling.sdk_sampler(spec)]
    # A deliberate extension of docs/design.md section 4 (docs/tracing.md): spans of one trace
    # reach the collector well within decisionWait, and bursts do not drop them in the SDK.
    variables += [env(name, value) for name, value in sampling.sdk_batch_processor(spec)]
    return variables


def node_trace_flags(spec: PipelineSpec | None) -> list[tuple[str, str]]:
    """The ``kvtrace node serve`` tracing flags (flag, value) a pipeline (its typed spec, None
    when untraced) asks of KV nodes: raw keys (a development pipeline that does not hash
    kvstore.key) and retroactive sampling's. Flags, not OTel variables: the OTel environment
    stays the standard one."""
    if spec is None:
        return []
    flags = [("--trace-raw-keys", "true")] if sampling.records_raw_keys(spec) else []
    return flags + sampling.node_retroactive_flags(spec)


def flag_variable(flag: str) -> str:
    """The ``KVNODE_*`` variable of a ``kvtrace node serve`` flag (``--data-dir`` ↔
    ``KVNODE_DATA_DIR``, docs/design.md section 3)."""
    return "KVNODE_" + flag.removeprefix("--").replace("-", "_").upper()


def resource_attributes(cluster: dict[str, Any]) -> str:
    name, namespace = names.name_of(cluster), names.namespace_of(cluster)
    attributes = [
        ("k8s.namespace.name", namespace),
        ("k8s.pod.name", "$(POD_NAME)"),
        ("k8s.node.name", "$(NODE_NAME)"),
        ("k8s.statefulset.name", name),
        ("kvtrace.cluster", name),
        ("kvstore.member.id", "$(POD_NAME)"),
        ("service.instance.id", "$(POD_NAME)"),
    ]
    return ",".join(f"{key}={value}" for key, value in attributes)


def service_name(cluster: dict[str, Any], spec: KVClusterSpec) -> str:
    return spec.service_name or names.name_of(cluster)


def otel_environment(
    cluster: dict[str, Any], pipeline: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The env list injected into KV pods; ``pipeline`` None means untraced. Raises
    SpecError (naming the pipeline's field) when the pipeline cannot be rendered."""
    if pipeline is None:
        return [env("OTEL_SDK_DISABLED", "true")]
    spec = validate_pipeline(pipeline)
    return [
        *downward_env(),
        env("OTEL_SERVICE_NAME", service_name(cluster, parse_kvcluster(cluster.get("spec")))),
        env("OTEL_RESOURCE_ATTRIBUTES", resource_attributes(cluster)),
        *exporter_env(pipeline, spec),
        # The cluster's own token only by reference to its Secret, never in a ConfigMap.
        *security.client_env(spec, names.name_of(cluster)),
    ]
