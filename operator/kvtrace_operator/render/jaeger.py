"""Jaeger v2 configuration (an OpenTelemetry Collector distribution, ``jaeger`` v1.76.0)."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import names, query_access, query_proxy, tls
from kvtrace_operator.render.collector import listen, otlp_receiver, self_telemetry
from kvtrace_operator.render.defaults import apply_defaults_pipeline
from kvtrace_operator.render.metrics import SPM_BACKEND, jaeger_metric_backends

STORE = "traces"
BADGER_DIR = "/badger"


def storage_backend(storage: dict[str, Any]) -> dict[str, Any]:
    if storage["type"] == "badger":
        return {
            "badger": {
                "directories": {"keys": f"{BADGER_DIR}/keys", "values": f"{BADGER_DIR}/values"},
                "ephemeral": False,
                "ttl": {"spans": storage["retention"]},
            }
        }
    return {"memory": {"max_traces": storage["maxTraces"]}}


def query_extension(spec: dict[str, Any]) -> dict[str, Any]:
    """The query servers: on the query ports, or on loopback behind kvtrace's query proxy
    (modes bearer and oidc: the proxy serves the query port, render/query_access.py)."""
    jaeger = spec["jaeger"]
    http, grpc = (
        query_proxy.loopback_endpoints()
        if query_access.proxied(spec)
        else (listen(names.JAEGER_QUERY_HTTP_PORT), listen(names.JAEGER_QUERY_GRPC_PORT))
    )
    query: dict[str, Any] = {
        # The Monitor tab (SPM) reads the span metrics (render/metrics.py).
        "storage": {
            "traces": STORE,
            **({"metrics": SPM_BACKEND} if spec["metrics"]["enabled"] else {}),
        },
        # Defaults to true: Jaeger would export spans of its own queries to localhost:4317,
        # where nothing listens in its pod.
        "enable_tracing": False,
        "http": {"endpoint": http, **query_access.server_settings(spec)},
        "grpc": {"endpoint": grpc, **query_access.server_settings(spec)},
    }
    tenancy = jaeger["tenancy"]
    if tenancy["enabled"]:
        # tenancy.Options has no mapstructure tags: jaeger v1.76 matches the Go field names.
        query["multi_tenancy"] = {
            "Enabled": True,
            "Header": tenancy["header"],
            "Tenants": list(tenancy.get("tenants") or []),
        }
    return query


def render_jaeger_config(pipeline: dict[str, Any]) -> dict[str, Any]:
    """Jaeger v2: OTLP in (over TLS with the pipeline's managed or cert-manager leaf), one
    storage backend, the query service on 16686 (the same leaf with TLS; behind the query
    proxy on loopback); its own metrics stay on 8888 (the collector's moved to 8889)."""
    spec = apply_defaults_pipeline(pipeline.get("spec"))
    jaeger = spec["jaeger"]
    storage: dict[str, Any] = {"backends": {STORE: storage_backend(jaeger["storage"])}}
    if metric_backends := jaeger_metric_backends(pipeline, spec):
        storage["metric_backends"] = metric_backends  # the Monitor tab (SPM)
    return {
        "extensions": {
            "jaeger_storage": storage,
            "jaeger_query": query_extension(spec),
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": listen(names.HEALTH_PORT)}},
            **query_access.extensions(spec),
        },
        "receivers": {
            "otlp": otlp_receiver(
                tls.server_tls(spec, tls.JAEGER_SERVING_DIR) if tls.every_hop(spec) else None
            )
        },
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": STORE}},
        "service": {
            "extensions": [
                "jaeger_storage",
                "jaeger_query",
                "healthcheckv2",
                *query_access.extensions(spec),
            ],
            "telemetry": self_telemetry(names.JAEGER_METRICS_PORT),
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
        },
    }
