"""Layer 1 of the operator: pure, deterministic functions from custom resources (plain
dicts) to Kubernetes objects and collector/Jaeger configs (plain dicts).

No kopf, no Kubernetes client (import-linter enforces it). Same input, same output.
"""

from kvtrace_operator.render.checksum import checksum
from kvtrace_operator.render.collector import render_collector_config
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.jaeger import render_jaeger_config
from kvtrace_operator.render.kvcluster import max_unavailable, quorum, render_kvcluster
from kvtrace_operator.render.labels import selector_string
from kvtrace_operator.render.names import client_endpoint, pipeline_endpoints
from kvtrace_operator.render.otel_env import otel_environment
from kvtrace_operator.render.pipeline import render_pipeline
from kvtrace_operator.render.resources import pipeline_ref, referenced_pipeline, render_all
from kvtrace_operator.render.sampling import HEAD_NOTE
from kvtrace_operator.render.validate import validate_kvcluster, validate_pipeline

__all__ = [
    "HEAD_NOTE",
    "SpecError",
    "checksum",
    "client_endpoint",
    "max_unavailable",
    "otel_environment",
    "pipeline_endpoints",
    "pipeline_ref",
    "quorum",
    "referenced_pipeline",
    "render_all",
    "render_collector_config",
    "render_jaeger_config",
    "render_kvcluster",
    "render_pipeline",
    "selector_string",
    "validate_kvcluster",
    "validate_pipeline",
]
