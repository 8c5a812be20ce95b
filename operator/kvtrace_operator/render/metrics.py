"""Metrics from traces (``spec.metrics``): the collector's ``spanmetrics`` and ``servicegraph``
connectors, the Prometheus the operator deploys (or an external Prometheus-compatible store),
and Jaeger's metrics backend for its Monitor tab (SPM).

The connectors see every span BEFORE tail sampling: the sampling tier (the only tier, or the
one behind the load balancer, where all spans of a trace meet) gets a second traces pipeline
``traces/spanmetrics`` fed by the same receivers, whose only exporters are the two connectors;
their metrics go out through ``otlp_http/metrics`` to the store's OTLP endpoint (Prometheus
``/api/v1/otlp``). The traces pipeline is untouched, and a store that is down only drops
metrics (the exporter's own bounded queue), never traces. In ``head`` mode the SDK has already
dropped what it did not sample: the metrics then describe the sampled share only.

Pure: imports neither kopf nor any Kubernetes client, nor the handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvtrace_operator.render import names, podspec, sampling
from kvtrace_operator.render.checksum import checksum
from kvtrace_operator.render.deployment import config_map, dump_config, service
from kvtrace_operator.render.labels import (
    CLIENT_SCHEME_LABEL,
    COLLECTOR,
    COLLECTOR_SAMPLING,
    JAEGER,
    KVNODE,
    PROMETHEUS,
    child_metadata,
    selector_labels,
    standard_labels,
)
from kvtrace_operator.render.monitoring import rules_for
from kvtrace_operator.spec import PipelineSpec
from kvtrace_operator.spec.durations import Duration
from kvtrace_operator.spec.quantities import Quantity

SPANMETRICS = "span_metrics"  # the contrib spanmetrics connector (its 0.161 type name)
SERVICEGRAPH = "service_graph"  # the contrib servicegraph connector
METRICS_EXPORTER = "otlp_http/metrics"
TRACES_TO_METRICS = "traces/spanmetrics"
METRICS_PIPELINE = "metrics/spanmetrics"
# Jaeger's SPM reads the spanmetrics connector's default namespace (traces.span.metrics).
SPM_BACKEND = "metrics"
OTLP_PATH = "/api/v1/otlp/v1/metrics"
ZERO_AT_START = "--enable-feature=created-timestamp-zero-ingestion"
CONFIG_FILE = "prometheus.yml"
RULES_FILE = "rules.yml"
CONFIG_DIR = "/etc/prometheus"
DATA_DIR = "/prometheus"
# Span attributes (or resource attributes) that become metric labels besides the connector's
# own service.name, span.name, span.kind and status.code (docs/design.md, tracing contract).
DIMENSIONS = ("kvstore.operation", "kvstore.consistency", "kvstore.member.id")
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
# Scrape jobs; the local harness replaces their service discovery with loopback targets.
JOB_COLLECTOR, JOB_JAEGER, JOB_KVNODE = "kvtrace-collector", "kvtrace-jaeger", "kvtrace-kvnode"


@dataclass(frozen=True)
class MetricsSettings:
    """``spec.metrics`` parsed and defaulted once."""

    enabled: bool
    deploy: bool  # the operator deploys Prometheus (no spec.metrics.external)
    query_url: str  # where Jaeger's SPM and ``kvtrace top`` query
    otlp_url: str  # where the collector pushes the connectors' metrics
    retention: str  # Prometheus form: whole seconds
    storage_size: Quantity
    scrape_interval: str
    resources: dict[str, Any]


def _seconds(value: Duration) -> str:
    return f"{max(1, value.nanos // 10**9)}s"


def metrics_settings(pipeline: dict[str, Any], spec: PipelineSpec) -> MetricsSettings:
    """What ``spec.metrics`` means for this pipeline: where metrics go and are queried."""
    metrics = spec.metrics
    prometheus = metrics.prometheus
    external = metrics.external
    if external is not None and external.url:
        query_url = external.url.rstrip("/")
        otlp_url = external.otlp_endpoint or query_url + OTLP_PATH
    else:
        host = names.service_dns(
            names.prometheus(names.name_of(pipeline)), names.namespace_of(pipeline)
        )
        query_url = f"http://{host}:{names.PROMETHEUS_PORT}"
        otlp_url = query_url + OTLP_PATH
    return MetricsSettings(
        enabled=metrics.enabled,
        deploy=metrics.deploys_prometheus,
        query_url=query_url,
        otlp_url=otlp_url,
        retention=_seconds(prometheus.retention),
        storage_size=prometheus.storage_size,
        scrape_interval=_seconds(prometheus.scrape_interval),
        resources=prometheus.resources or DEFAULT_RESOURCES,
    )


# --------------------------------------------------------------------------- collector


def connectors() -> dict[str, Any]:
    """RED metrics per service, span name, kind, status and the kvstore dimensions; the
    service graph's edges, failed calls and latency. Flushed every 15 s (one scrape interval)."""
    buckets = [f"{ms}ms" for ms in LATENCY_BUCKETS_MS]
    return {
        SPANMETRICS: {
            "histogram": {"unit": "ms", "explicit": {"buckets": buckets}},
            "dimensions": [{"name": name} for name in DIMENSIONS],
            "metrics_flush_interval": "15s",
        },
        SERVICEGRAPH: {
            "latency_histogram_buckets": buckets,
            "store": {"ttl": "5s", "max_items": 5000},
            "metrics_flush_interval": "15s",
        },
    }


def metrics_exporter(settings: MetricsSettings) -> dict[str, Any]:
    """OTLP/HTTP to the store, with a bounded queue: a store that is down drops metrics only."""
    return {
        "metrics_endpoint": settings.otlp_url,
        "sending_queue": {"enabled": True, "queue_size": 100},
        "retry_on_failure": {"enabled": True, "max_elapsed_time": "60s"},
    }


def add_span_metrics(
    config: dict[str, Any], pipeline: dict[str, Any], spec: PipelineSpec
) -> dict[str, Any]:
    """``config`` (a sampling-tier collector config) with the two connectors fed by the same
    receivers as its traces pipeline, before any sampling; unchanged when metrics are off."""
    settings = metrics_settings(pipeline, spec)
    if not settings.enabled:
        return config
    config["connectors"] = connectors()
    config["exporters"][METRICS_EXPORTER] = metrics_exporter(settings)
    pipelines = config["service"]["pipelines"]
    pipelines[TRACES_TO_METRICS] = {
        "receivers": list(pipelines["traces"]["receivers"]),
        "processors": ["memory_limiter"],
        "exporters": [SPANMETRICS, SERVICEGRAPH],
    }
    pipelines[METRICS_PIPELINE] = {
        "receivers": [SPANMETRICS, SERVICEGRAPH],
        "exporters": [METRICS_EXPORTER],
    }
    return config


def describes(spec: PipelineSpec) -> str:
    """What the span metrics count (for status and docs)."""
    if spec.sampling.mode == sampling.HEAD:
        return (
            f"only the head-sampled share of the traffic (ratio {spec.sampling.ratio}): "
            "scale rates by 1/ratio; error counts are sampled too"
        )
    if spec.sampling.mode == sampling.RETROACTIVE:
        return (
            f"only the kept spans (ratio {spec.sampling.ratio} of the traffic, plus every "
            "failed and slow KV operation): rates and latencies lean towards errors and slow "
            "operations; use the nodes' own kvnode_request* metrics for the whole traffic"
        )
    return "every span, before tail sampling"


# --------------------------------------------------------------------------- Jaeger


def jaeger_metric_backends(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, Any]:
    """Jaeger's ``metric_backends`` (its Monitor tab reads the spanmetrics); {} when off."""
    settings = metrics_settings(pipeline, spec)
    if not settings.enabled:
        return {}
    return {
        SPM_BACKEND: {
            "prometheus": {
                "endpoint": settings.query_url,
                "normalize_calls": True,
                "normalize_duration": True,
            }
        }
    }


# --------------------------------------------------------------------------- Prometheus


def _pods_job(job: str, namespace: str, keep: dict[str, str], port_name: str) -> dict[str, Any]:
    """Pods of ``namespace`` whose labels match ``keep``, on their container port ``port_name``."""
    relabel = [
        {
            "source_labels": [f"__meta_kubernetes_pod_label_{_label_key(key)}"],
            "regex": value,
            "action": "keep",
        }
        for key, value in keep.items()
    ]
    relabel += [
        {
            "source_labels": ["__meta_kubernetes_pod_container_port_name"],
            "regex": port_name,
            "action": "keep",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {
            "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
            "target_label": "instance_of",
        },
    ]
    return {
        "job_name": job,
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
        "relabel_configs": relabel,
    }


def kvnode_job(namespace: str) -> dict[str, Any]:
    """The KV members of the namespace on their client port, with the scheme each member's
    ``kvtrace.dev/client-scheme`` label gives (https unless its cluster turned TLS off: an
    http scrape of a TLS port would read as every member down and page for quorum lost).
    The certificate is not verified: each KVCluster has its own CA, which this one job
    cannot hold, and /metrics carries no secret and needs no token. The scrape is still
    encrypted; docs/monitoring.md says so."""
    job = _pods_job(JOB_KVNODE, namespace, {"app.kubernetes.io/component": KVNODE}, "client")
    job["relabel_configs"].append(
        {
            "source_labels": [f"__meta_kubernetes_pod_label_{_label_key(CLIENT_SCHEME_LABEL)}"],
            "regex": "(https?)",
            "target_label": "__scheme__",
        }
    )
    job["tls_config"] = {"insecure_skip_verify": True}
    return job


def _label_key(key: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in key)


def prometheus_config(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, Any]:
    """Scrapes the collector's and Jaeger's own telemetry and the KV nodes of the namespace;
    receives the span metrics over OTLP; evaluates the alert rules."""
    settings = metrics_settings(pipeline, spec)
    namespace, instance = names.namespace_of(pipeline), names.name_of(pipeline)
    own = {"app.kubernetes.io/instance": instance, "app.kubernetes.io/part-of": "kvtrace"}
    collector = "|".join(sorted({COLLECTOR, COLLECTOR_SAMPLING, "collector-loadbalancer"}))
    return {
        "global": {
            "scrape_interval": settings.scrape_interval,
            "evaluation_interval": settings.scrape_interval,
            "external_labels": {"kvtrace_pipeline": f"{namespace}/{instance}"},
        },
        "rule_files": [f"{CONFIG_DIR}/{RULES_FILE}"],
        "scrape_configs": [
            _pods_job(
                JOB_COLLECTOR,
                namespace,
                {**own, "app.kubernetes.io/component": collector},
                "metrics",
            ),
            _pods_job(
                JOB_JAEGER, namespace, {**own, "app.kubernetes.io/component": JAEGER}, "metrics"
            ),
            kvnode_job(namespace),
        ],
    }


def prometheus_args(settings: MetricsSettings) -> list[str]:
    """Flags: the config, a TSDB bounded by time and by size, the OTLP receiver, and a zero
    sample at each pushed series' start time: without it the first push of a new series (a
    new operation, the first error, a burst within one 15 s connector flush) has nothing
    before it, and rate() and histogram_quantile() do not see it."""
    return [
        f"--config.file={CONFIG_DIR}/{CONFIG_FILE}",
        f"--storage.tsdb.path={DATA_DIR}",
        f"--storage.tsdb.retention.time={settings.retention}",
        f"--storage.tsdb.retention.size={retention_size(settings.storage_size)}",
        f"--web.listen-address=:{names.PROMETHEUS_PORT}",
        "--web.enable-otlp-receiver",
        ZERO_AT_START,
    ]


def retention_size(size: Quantity) -> str:
    """80% of the data volume's size in Prometheus units (``1Gi`` -> ``819MB``; MB is 2^20)."""
    return f"{max(1, int(size.bytes * 0.8) // 2**20)}MB"


def prometheus_container(settings: MetricsSettings, image: str) -> dict[str, Any]:
    container = {
        "name": "prometheus",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": prometheus_args(settings),
        "ports": [podspec.port("http", names.PROMETHEUS_PORT)],
        "livenessProbe": podspec.http_probe("/-/healthy", "http", period=10),
        "readinessProbe": podspec.http_probe("/-/ready", "http", period=5),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "data", "mountPath": DATA_DIR},
            podspec.tmp_mount(),
        ],
        "securityContext": podspec.container_security_context(),
    }
    return podspec.with_resources(container, settings.resources)


def prometheus_deployment(
    pipeline: dict[str, Any], settings: MetricsSettings, files: dict[str, str], image: str
) -> dict[str, Any]:
    name = names.prometheus(names.name_of(pipeline))
    volumes = [
        {"name": "config", "configMap": {"name": name}},
        {"name": "data", "emptyDir": {"sizeLimit": settings.storage_size.text}},
        podspec.tmp_volume(),
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(pipeline, name, PROMETHEUS),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(pipeline, PROMETHEUS)},
            "template": {
                "metadata": podspec.template_metadata(
                    standard_labels(pipeline, PROMETHEUS), checksum(files)
                ),
                "spec": {
                    "serviceAccountName": name,
                    "enableServiceLinks": False,
                    "securityContext": podspec.pod_security_context(),
                    "containers": [prometheus_container(settings, image)],
                    "volumes": volumes,
                },
            },
        },
    }


def prometheus_rbac(pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    """Its ServiceAccount, allowed to list and watch the pods of its own namespace only."""
    name = names.prometheus(names.name_of(pipeline))
    metadata = child_metadata(pipeline, name, PROMETHEUS)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata,
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {"kind": "ServiceAccount", "name": name, "namespace": names.namespace_of(pipeline)}
            ],
        },
    ]


def prometheus_files(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, str]:
    """The ConfigMap's files: ``prometheus.yml`` and the alert rules."""
    return {
        CONFIG_FILE: dump_config(prometheus_config(pipeline, spec)),
        RULES_FILE: dump_config(rules_for(pipeline, spec)),
    }


def metrics_objects(
    pipeline: dict[str, Any], spec: PipelineSpec, image: str
) -> list[dict[str, Any]]:
    """Prometheus (RBAC, ConfigMap, Deployment, Service) when the operator deploys it
    (``image``: the pipeline's, else the operator's --prometheus-image)."""
    settings = metrics_settings(pipeline, spec)
    if not settings.deploy:
        return []
    name = names.prometheus(names.name_of(pipeline))
    files = prometheus_files(pipeline, spec)
    return [
        *prometheus_rbac(pipeline),
        config_map(pipeline, name, PROMETHEUS, files),
        prometheus_deployment(pipeline, settings, files, image),
        service(pipeline, name, PROMETHEUS, [("http", names.PROMETHEUS_PORT)]),
    ]
