"""Every child object of a TracingPipeline, in apply order."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import names, security
from kvtrace_operator.render.certificates import certificate_objects
from kvtrace_operator.render.collector_objects import collector_objects
from kvtrace_operator.render.defaults import apply_defaults_pipeline
from kvtrace_operator.render.deployment import config_map
from kvtrace_operator.render.images import OPERATOR_IMAGE
from kvtrace_operator.render.jaeger_objects import jaeger_objects
from kvtrace_operator.render.labels import INSTRUMENTATION
from kvtrace_operator.render.metrics import metrics_objects
from kvtrace_operator.render.networkpolicy import pipeline_policies
from kvtrace_operator.render.otel_env import exporter_env
from kvtrace_operator.render.validate import validate_pipeline


def instrumentation_configmap(pipeline: dict[str, Any]) -> dict[str, Any]:
    """The standard OTEL_* variables any application can ``envFrom`` (it sets its own
    OTEL_SERVICE_NAME)."""
    data = {item["name"]: item["value"] for item in exporter_env(pipeline)}
    return config_map(
        pipeline, names.instrumentation(names.name_of(pipeline)), INSTRUMENTATION, data
    )


def render_pipeline(
    pipeline: dict[str, Any], *, proxy_image: str = OPERATOR_IMAGE
) -> list[dict[str, Any]]:
    """The auth Secrets (the collector's token set, generated tokens), cert-manager Certificates
    (``tls.mode: certManager``), collector tier(s),
    Jaeger (PVC first when badger), Prometheus (``spec.metrics``), the instrumentation ConfigMap and the NetworkPolicies
    (unless ``networkPolicy.enabled`` is false). ``proxy_image``: the ``query-proxy``
    sidecar's image unless the pipeline sets ``proxyImage`` (the operator passes its own)."""
    validate_pipeline(pipeline)
    spec = apply_defaults_pipeline(pipeline.get("spec"))
    return [
        *security.pipeline_secrets(pipeline, spec),
        *certificate_objects(pipeline, spec),
        *collector_objects(pipeline, spec),
        *jaeger_objects(pipeline, spec, proxy_image),
        *metrics_objects(pipeline, spec),
        instrumentation_configmap(pipeline),
        *pipeline_policies(pipeline, spec),
    ]
