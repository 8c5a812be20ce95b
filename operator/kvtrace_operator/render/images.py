"""Default images: one place, shared by the defaults, the docs, the Makefile (`make images`,
`make kind-up` read these lines) and the chart (its image is checked against OPERATOR_IMAGE).

Jaeger: the Go module tag v1.76.0 is the release "v1.76.0 / v2.13.0"; Jaeger v2 images are
tagged with the v2 version. ``Images`` holds the operator-wide choice of these defaults
(``--kvnode-image``, ``--collector-image``, ``--jaeger-image``, ``--prometheus-image``,
``--query-proxy-image``, ``--python-agent-image``, ``--java-agent-image``); the render functions
fill a resource's missing images from it, the injection its agents' init containers.
Pure: imports nothing of the operator but the typed spec.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from kvtrace_operator.spec import PipelineSpec

OPERATOR_IMAGE = "ghcr.io/kvtrace/kvtrace-operator:0.1.0"
KVNODE_IMAGE = "ghcr.io/kvtrace/kvnode:0.1.0"
COLLECTOR_IMAGE = "ghcr.io/kvtrace/otelcol-kvtrace:0.161.0"
JAEGER_IMAGE = "jaegertracing/jaeger:2.13.0"
# Language agents of injected pods (render/injection.py): images built in this repository
# (instrumentation/), each copying its agent into an emptyDir from an init container.
PYTHON_AGENT_IMAGE = "ghcr.io/kvtrace/autoinstrumentation-python:0.66b1"
JAVA_AGENT_IMAGE = "ghcr.io/kvtrace/autoinstrumentation-java:2.22.0"
PROMETHEUS_IMAGE = "prom/prometheus:v3.16.0"  # the release of Go module v0.316.0 (the local build)


@dataclass(frozen=True)
class Images:
    """The operator-wide default images (``kvtrace operator run --kvnode-image ...``, the
    chart's ``images.*`` values): what a resource runs when it names no image of its own.
    The CRDs default none of these fields, so an object created without an image follows the
    operator's setting (a mirrored registry is one setting, an operator upgrade moves it)."""

    kvnode: str = KVNODE_IMAGE  # KVCluster spec.image
    collector: str = COLLECTOR_IMAGE  # TracingPipeline spec.collector.image
    jaeger: str = JAEGER_IMAGE  # TracingPipeline spec.jaeger.image
    prometheus: str = PROMETHEUS_IMAGE  # TracingPipeline spec.metrics.prometheus.image
    query_proxy: str = OPERATOR_IMAGE  # the query-proxy sidecar, unless the pipeline's proxyImage
    python_agent: str = PYTHON_AGENT_IMAGE  # injected pods' init container (inject-python)
    java_agent: str = JAVA_AGENT_IMAGE  # injected pods' init container (inject-java)


DEFAULT_IMAGES = Images()


def images_from_args(args: Any) -> Images:
    """The ``Images`` of parsed command-line flags (``--kvnode-image`` is ``args.kvnode_image``,
    ...); the built-in default for a flag the parser did not define."""
    chosen: dict[str, str] = {
        field.name: str(getattr(args, f"{field.name}_image", getattr(DEFAULT_IMAGES, field.name)))
        for field in fields(Images)
    }
    return Images(**chosen)


def pipeline_images(spec: PipelineSpec, images: Images) -> Images:
    """The images a pipeline runs: those its spec names (collector, Jaeger, Prometheus, the
    query proxy's ``proxyImage``), else the operator-wide ``images``."""
    return replace(
        images,
        collector=spec.collector.image or images.collector,
        jaeger=spec.jaeger.image or images.jaeger,
        prometheus=spec.metrics.prometheus.image or images.prometheus,
        query_proxy=spec.jaeger.query_auth.proxy_image or images.query_proxy,
    )
