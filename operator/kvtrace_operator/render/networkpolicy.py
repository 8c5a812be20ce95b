"""NetworkPolicies (ingress only) of a KVCluster and of a TracingPipeline: who may reach
which port. ``spec.networkPolicy.enabled: false`` renders none (clusters without a policy
engine, or users who manage their own).

Every rule names its ports by number (a policy's named ports resolve per target pod; numbers
keep the table in docs/security.md and the rendered objects identical). Peers are pod
selectors in the resource's own namespace, except the kvtrace operator (any namespace) and
the "anywhere" rules (no ``from``), which are only used for health and metrics ports and for
a KV cluster's client port when ``clientAccess`` is ``all``.
"""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import names, query_access, sampling
from kvtrace_operator.render.labels import (
    COLLECTOR,
    COLLECTOR_LOADBALANCER,
    COLLECTOR_SAMPLING,
    JAEGER,
    KVNODE,
    PART_OF,
    PROMETHEUS,
    child_metadata,
    selector_labels,
)
from kvtrace_operator.spec import KVClusterSpec, PipelineSpec

# Labels a pod carries to be let in (the value is the KVCluster's or pipeline's name).
TELEMETRY_CLIENT_LABEL = "kvtrace.dev/telemetry-client"
KV_CLIENT_LABEL = "kvtrace.dev/kv-client"
QUERY_CLIENT_LABEL = "kvtrace.dev/jaeger-query-client"
# The operator asks leaving members whether they drained (GET :7070/v1/cluster).
OPERATOR_LABELS = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": "operator"}


def enabled(spec: KVClusterSpec | PipelineSpec) -> bool:
    return spec.network_policy_enabled


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def pods(labels: dict[str, str]) -> dict[str, Any]:
    """Pods of the policy's own namespace carrying ``labels``."""
    return {"podSelector": {"matchLabels": dict(labels)}}


def rule(ports: list[int], peers: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An ingress rule; ``peers`` None means from anywhere."""
    result: dict[str, Any] = {}
    if peers is not None:
        result["from"] = peers
    result["ports"] = tcp(*ports)
    return result


def policy(
    owner: dict[str, Any], name: str, component: str, rules: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner, name, component),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner, component)},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def kvcluster_policies(cluster: dict[str, Any], spec: KVClusterSpec) -> list[dict[str, Any]]:
    """Peer port only from the cluster's own members; client port from anywhere (``all``)
    or from pods labelled ``kvtrace.dev/kv-client=NAME``, the members, the operator and the
    Prometheus of any pipeline in the namespace (it scrapes ``/metrics`` on the client port)."""
    if not enabled(spec):
        return []
    name = names.name_of(cluster)
    members = pods(selector_labels(cluster, KVNODE))
    if spec.client_access == "labelled":
        operator = {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(OPERATOR_LABELS)}}
        scraper = pods(
            {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": PROMETHEUS}
        )
        client = rule(
            [names.CLIENT_PORT], [pods({KV_CLIENT_LABEL: name}), members, operator, scraper]
        )
    else:
        client = rule([names.CLIENT_PORT], None)
    return [policy(cluster, name, KVNODE, [client, rule([names.PEER_PORT], [members])])]


def edge_ports(spec: PipelineSpec) -> list[int]:
    ports = [names.OTLP_GRPC_PORT, names.OTLP_HTTP_PORT]
    if spec.zipkin_receiver:
        ports.append(names.ZIPKIN_PORT)
    if spec.jaeger_receiver:
        ports += [names.JAEGER_GRPC_PORT, names.JAEGER_THRIFT_HTTP_PORT]
    return ports


def pipeline_policies(pipeline: dict[str, Any], spec: PipelineSpec) -> list[dict[str, Any]]:
    """Collector receivers only from consumers (pods labelled
    ``kvtrace.dev/telemetry-client=NAME``: the members of KVClusters that reference the
    pipeline carry it); the sampling tier only from the load-balancing tier; Jaeger's OTLP
    only from the collector that exports to it, its query ports from the namespace (or only
    from pods labelled ``kvtrace.dev/jaeger-query-client=NAME``). Health and metrics ports
    from anywhere (kubelet probes, Prometheus)."""
    if not enabled(spec):
        return []
    name = names.name_of(pipeline)
    consumers = [pods({TELEMETRY_CLIENT_LABEL: name})]
    own = rule([names.HEALTH_PORT, names.COLLECTOR_METRICS_PORT], None)
    result = []
    if sampling.two_tier(spec):
        front = COLLECTOR_LOADBALANCER
        result.append(
            policy(
                pipeline,
                names.sampling_collector(name),
                COLLECTOR_SAMPLING,
                [rule([names.OTLP_GRPC_PORT], [pods(selector_labels(pipeline, front))]), own],
            )
        )
        exporting = COLLECTOR_SAMPLING
    else:
        front = exporting = COLLECTOR
    # The operator sends its TraceDelivery canary (and, with --trace-pipeline, its own spans)
    # over OTLP/HTTP and looks the canary up through Jaeger's query API.
    operator = {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(OPERATOR_LABELS)}}
    result.append(
        policy(
            pipeline,
            names.collector(name),
            front,
            [rule(edge_ports(spec), consumers), rule([names.OTLP_HTTP_PORT], [operator]), own],
        )
    )
    if spec.query_access == "labelled":
        query_peers = [pods({QUERY_CLIENT_LABEL: name})]
    else:
        query_peers = [{"podSelector": {}}]
    if spec.jaeger.enabled:
        result.append(
            policy(
                pipeline,
                names.jaeger(name),
                JAEGER,
                [
                    rule(
                        [names.OTLP_GRPC_PORT, names.OTLP_HTTP_PORT],
                        [pods(selector_labels(pipeline, exporting))],
                    ),
                    # Both query ports, or only 16686 behind the query proxy (modes bearer and oidc).
                    rule([port for _, port in query_access.query_ports(spec)], query_peers),
                    rule([names.JAEGER_QUERY_HTTP_PORT], [operator]),
                    rule([names.HEALTH_PORT, names.JAEGER_METRICS_PORT], None),
                ],
            )
        )
    if spec.metrics.deploys_prometheus:
        # Writes (OTLP from the collector tier that runs the connectors) and queries (Jaeger's
        # Monitor tab, the query clients Jaeger's own rule admits, the operator) share 9090.
        writers_and_readers = [
            pods(selector_labels(pipeline, exporting)),
            pods(selector_labels(pipeline, JAEGER)),
            *query_peers,
            operator,
        ]
        result.append(
            policy(
                pipeline,
                names.prometheus(name),
                PROMETHEUS,
                [rule([names.PROMETHEUS_PORT], writers_and_readers)],
            )
        )
    return result
