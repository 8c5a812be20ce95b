"""Names, ports and DNS of everything the operator creates (one place, so status, docs
and tests agree)."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.spec import parse_kvcluster, parse_pipeline

# service.name of the operator's own reconcile spans (--trace-pipeline): production tail
# sampling keeps all of them, so a rolling restart is always visible beside KV latency.
OPERATOR_SERVICE_NAME = "kvtrace-operator"

# KV node (docs/design.md section 3).
CLIENT_PORT = 7070
PEER_PORT = 7071
DATA_DIR = "/var/lib/kvnode"
CONFIG_DIR = "/etc/kvnode"
PEERS_FILE = f"{CONFIG_DIR}/peers"

# Collector and Jaeger.
OTLP_GRPC_PORT = 4317
OTLP_HTTP_PORT = 4318
ZIPKIN_PORT = 9411
JAEGER_GRPC_PORT = 14250
JAEGER_THRIFT_HTTP_PORT = 14268
HEALTH_PORT = 13133
COLLECTOR_METRICS_PORT = 8889  # off 8888, which Jaeger keeps (docs/design.md section 5)
JAEGER_METRICS_PORT = 8888
JAEGER_QUERY_HTTP_PORT = 16686
JAEGER_QUERY_GRPC_PORT = 16685
PROMETHEUS_PORT = 9090  # the pipeline's Prometheus: queries and the OTLP metrics receiver


def name_of(resource: dict[str, Any]) -> str:
    return str(resource.get("metadata", {}).get("name", ""))


def namespace_of(resource: dict[str, Any]) -> str:
    return str(resource.get("metadata", {}).get("namespace") or "default")


def service_dns(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.cluster.local"


# KVCluster children.
def peers_service(cluster_name: str) -> str:
    return f"{cluster_name}-peers"


def node_configmap(cluster_name: str) -> str:
    return f"{cluster_name}-config"


def member_address(cluster_name: str, namespace: str, ordinal: int) -> str:
    """The stable DNS name and peer port of StatefulSet member ``ordinal``."""
    host = service_dns(peers_service(cluster_name), namespace)
    return f"{cluster_name}-{ordinal}.{host}:{PEER_PORT}"


def client_endpoint(cluster: dict[str, Any]) -> str:
    tls = parse_kvcluster(cluster.get("spec")).security.tls.enabled
    return f"{'https' if tls else 'http'}://{service_dns(name_of(cluster), namespace_of(cluster))}:{CLIENT_PORT}"


def kv_tls_base(cluster_name: str) -> str:
    """Prefix of a KVCluster's TLS Secrets (NAME-kv-tls-ca, NAME-kv-tls-trust, NAME-kv-tls):
    distinct from a pipeline's of the same name."""
    return f"{cluster_name}-kv"


def kv_client_token(cluster_name: str, client: str | None = None) -> str:
    """The generated token Secret of a KVCluster's clients, or of the declared ``client``."""
    return (
        f"{cluster_name}-{client}-kv-client-token" if client else f"{cluster_name}-kv-client-token"
    )


# TracingPipeline children.
def collector(pipeline_name: str) -> str:
    """The collector apps send to (the load-balancing tier when there are two)."""
    return f"{pipeline_name}-collector"


def sampling_collector(pipeline_name: str) -> str:
    """The sampling tier behind a load-balancing tier (Deployment, ConfigMap, headless Service)."""
    return f"{pipeline_name}-collector-sampling"


def jaeger(pipeline_name: str) -> str:
    return f"{pipeline_name}-jaeger"


def jaeger_query(pipeline_name: str) -> str:
    return f"{pipeline_name}-jaeger-query"


def jaeger_otlp(pipeline_name: str) -> str:
    return f"{pipeline_name}-jaeger-otlp"


def jaeger_data(pipeline_name: str) -> str:
    return f"{pipeline_name}-jaeger-data"


def prometheus(pipeline_name: str) -> str:
    """The pipeline's Prometheus (spec.metrics): Deployment, Service, ConfigMap, RBAC."""
    return f"{pipeline_name}-prometheus"


def instrumentation(pipeline_name: str) -> str:
    return f"{pipeline_name}-instrumentation"


def pipeline_endpoints(pipeline: dict[str, Any]) -> dict[str, str]:
    """The addresses a TracingPipeline's status reports (``status.endpoints``)."""
    spec = parse_pipeline(pipeline.get("spec"))
    name, namespace = name_of(pipeline), namespace_of(pipeline)
    host = service_dns(collector(name), namespace)
    scheme = "https" if spec.security.tls.enabled else "http"
    endpoints = {
        "otlpGrpc": f"{scheme}://{host}:{OTLP_GRPC_PORT}",
        "otlpHttp": f"{scheme}://{host}:{OTLP_HTTP_PORT}",
    }
    if spec.jaeger.enabled:
        query = service_dns(jaeger_query(name), namespace)
        # Jaeger serves a leaf of its own in TLS modes managed and certManager (not secret).
        own_leaf = spec.security.tls.every_hop
        endpoints["jaegerQuery"] = (
            f"{'https' if own_leaf else 'http'}://{query}:{JAEGER_QUERY_HTTP_PORT}"
        )
    metrics = spec.metrics
    if metrics.enabled:
        external = metrics.external.url if metrics.external is not None else None
        endpoints["metrics"] = (
            external or f"http://{service_dns(prometheus(name), namespace)}:{PROMETHEUS_PORT}"
        )
    return endpoints
