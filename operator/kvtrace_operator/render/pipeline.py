"""Every child object of a TracingPipeline, in apply order."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import names, security
from kvtrace_operator.render.certificates import certificate_objects
from kvtrace_operator.render.collector_objects import collector_objects
from kvtrace_operator.render.deployment import config_map
from kvtrace_operator.render.images import DEFAULT_IMAGES, Images, pipeline_images
from kvtrace_operator.render.jaeger_objects import jaeger_objects
from kvtrace_operator.render.labels import INSTRUMENTATION
from kvtrace_operator.render.metrics import metrics_objects
from kvtrace_operator.render.networkpolicy import pipeline_policies
from kvtrace_operator.render.otel_env import exporter_env
from kvtrace_operator.render.validate import validate_pipeline
from kvtrace_operator.spec import PipelineSpec


def instrumentation_configmap(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, Any]:
    """The standard OTEL_* variables any application can ``envFrom`` (it sets its own
    OTEL_SERVICE_NAME)."""
    data = {item["name"]: item["value"] for item in exporter_env(pipeline, spec)}
    return config_map(
        pipeline, names.instrumentation(names.name_of(pipeline)), INSTRUMENTATION, data
    )


def render_pipeline(
    pipeline: dict[str, Any], *, images: Images = DEFAULT_IMAGES
) -> list[dict[str, Any]]:
    """The auth Secrets (the collector's token set, generated tokens), cert-manager Certificates
    (``tls.mode: certManager``), collector tier(s),
    Jaeger (PVC first when badger), Prometheus (``spec.metrics``), the instrumentation ConfigMap and the NetworkPolicies
    (unless ``networkPolicy.enabled`` is false). ``images``: the operator-wide defaults of
    the images the pipeline does not name (collector, Jaeger, Prometheus, and the
    ``query-proxy`` sidecar unless the pipeline sets ``proxyImage``)."""
    spec = validate_pipeline(pipeline)
    chosen = pipeline_images(spec, images)
    return [
        *security.pipeline_secrets(pipeline, spec),
        *certificate_objects(pipeline, spec),
        *collector_objects(pipeline, spec, chosen),
        *jaeger_objects(pipeline, spec, chosen),
        *metrics_objects(pipeline, spec, chosen.prometheus),
        instrumentation_configmap(pipeline, spec),
        *pipeline_policies(pipeline, spec),
    ]
