"""Default images: one place, shared by the defaults, the docs, the Makefile (`make images`,
`make kind-up` read these lines) and the chart (its image is checked against OPERATOR_IMAGE).

Jaeger: the Go module tag v1.76.0 is the release "v1.76.0 / v2.13.0"; Jaeger v2 images are
tagged with the v2 version. ``Images`` holds the operator-wide choice of these defaults
(``--kvnode-image``, ``--collector-image``, ``--jaeger-image``, ``--prometheus-image``,
``--query-proxy-image``, ``--python-agent-image``, ``--java-agent-image``); the render functions
fill a resource's missing images from it, the injection its agents' init containers.
Pure: imports nothing of the operator.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

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


def with_kvcluster_image(spec: dict[str, Any], images: Images) -> dict[str, Any]:
    """A defaulted KVCluster ``spec`` with ``image`` set: its own, else ``images.kvnode``."""
    return {**spec, "image": spec.get("image") or images.kvnode}


def with_pipeline_images(spec: dict[str, Any], images: Images) -> dict[str, Any]:
    """A defaulted TracingPipeline ``spec`` with the collector's, Jaeger's and Prometheus's
    images set: the pipeline's own, else the operator's defaults in ``images``."""
    metrics = spec["metrics"]
    prometheus = metrics["prometheus"]
    return {
        **spec,
        "collector": {
            **spec["collector"],
            "image": spec["collector"].get("image") or images.collector,
        },
        "jaeger": {**spec["jaeger"], "image": spec["jaeger"].get("image") or images.jaeger},
        "metrics": {
            **metrics,
            "prometheus": {**prometheus, "image": prometheus.get("image") or images.prometheus},
        },
    }
