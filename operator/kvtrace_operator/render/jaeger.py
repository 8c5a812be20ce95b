"""Jaeger v2 configuration (an OpenTelemetry Collector distribution, ``jaeger`` v1.76.0)."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import names, query_access, query_proxy, tls
from kvtrace_operator.render.collector import listen, otlp_receiver, self_telemetry
from kvtrace_operator.render.metrics import SPM_BACKEND, jaeger_metric_backends
from kvtrace_operator.spec import PipelineSpec, parse_pipeline
from kvtrace_operator.spec.pipeline import Jaeger

STORE = "traces"
ARCHIVE_STORE = "archive"
BADGER_DIR = "/badger"
ARCHIVE_DIR = f"{BADGER_DIR}/archive"  # the archive's badger files, on the same volume


def storage_backend(
    kind: str, max_traces: int, retention: str, directory: str = BADGER_DIR
) -> dict[str, Any]:
    """One ``jaeger_storage`` backend: memory (``max_traces``) or badger (files under
    ``directory``, spans expire after ``retention``)."""
    if kind == "badger":
        return {
            "badger": {
                "directories": {"keys": f"{directory}/keys", "values": f"{directory}/values"},
                "ephemeral": False,
                "ttl": {"spans": retention},
            }
        }
    return {"memory": {"max_traces": max_traces}}


def storage_backends(jaeger: Jaeger) -> dict[str, Any]:
    """The primary store and, with ``archive.enabled``, the archive: the same type as the
    primary with its own bound (memory: ``archive.maxTraces``; badger: ``archive.retention``,
    under ``ARCHIVE_DIR``)."""
    storage, archive = jaeger.storage, jaeger.archive
    backends = {STORE: storage_backend(storage.type, storage.max_traces, storage.retention.text)}
    if archive.enabled:
        backends[ARCHIVE_STORE] = storage_backend(
            storage.type, archive.max_traces, archive.retention.text, ARCHIVE_DIR
        )
    return backends


def retention(jaeger: Jaeger) -> dict[str, Any]:
    """What each trace store keeps (``kvtrace status``, docs/tracing.md): ``traces`` and
    ``archive`` (None when off), each ``{"type", "maxTraces"}`` (memory: the newest that
    many, lost on restart) or ``{"type", "retention"}`` (badger: spans expire after it)."""

    def bound(kind: str, max_traces: int, kept: str) -> dict[str, Any]:
        if kind == "badger":
            return {"type": kind, "retention": kept}
        return {"type": kind, "maxTraces": max_traces}

    storage, archive = jaeger.storage, jaeger.archive
    return {
        "traces": bound(storage.type, storage.max_traces, storage.retention.text),
        "archive": bound(storage.type, archive.max_traces, archive.retention.text)
        if archive.enabled
        else None,
    }


def query_extension(spec: PipelineSpec) -> dict[str, Any]:
    """The query servers: on the query ports, or on loopback behind kvtrace's query proxy
    (modes bearer and oidc: the proxy serves the query port, render/query_access.py)."""
    jaeger = spec.jaeger
    http, grpc = (
        query_proxy.loopback_endpoints()
        if query_access.proxied(spec)
        else (listen(names.JAEGER_QUERY_HTTP_PORT), listen(names.JAEGER_QUERY_GRPC_PORT))
    )
    query: dict[str, Any] = {
        # The Monitor tab (SPM) reads the span metrics (render/metrics.py).
        "storage": {
            "traces": STORE,
            # The UI's Archive Trace button; reads by id fall back to it.
            **({"traces_archive": ARCHIVE_STORE} if jaeger.archive.enabled else {}),
            **({"metrics": SPM_BACKEND} if spec.metrics.enabled else {}),
        },
        # Defaults to true: Jaeger would export spans of its own queries to localhost:4317,
        # where nothing listens in its pod.
        "enable_tracing": False,
        "http": {"endpoint": http, **query_access.server_settings(spec)},
        "grpc": {"endpoint": grpc, **query_access.server_settings(spec)},
    }
    tenancy = jaeger.tenancy
    if tenancy.enabled:
        # tenancy.Options has no mapstructure tags: jaeger v1.76 matches the Go field names.
        query["multi_tenancy"] = {
            "Enabled": True,
            "Header": tenancy.header,
            "Tenants": list(tenancy.tenants),
        }
    return query


def render_jaeger_config(pipeline: dict[str, Any]) -> dict[str, Any]:
    """Jaeger v2: OTLP in (over TLS with the pipeline's managed or cert-manager leaf), the
    trace store (and the archive store when enabled), the query service on 16686 (the same leaf with TLS; behind the query
    proxy on loopback); its own metrics stay on 8888 (the collector's moved to 8889)."""
    spec = parse_pipeline(pipeline.get("spec"))
    storage: dict[str, Any] = {"backends": storage_backends(spec.jaeger)}
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
                tls.server_tls(spec.security.tls, tls.JAEGER_SERVING_DIR)
                if spec.security.tls.every_hop
                else None
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
