"""Every child object of a KVCluster, in apply order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvtrace_operator.render import kvsecurity, names, podspec, security
from kvtrace_operator.render.checksum import checksum
from kvtrace_operator.render.images import DEFAULT_IMAGES, Images
from kvtrace_operator.render.labels import (
    CLIENT_SCHEME_LABEL,
    KVNODE,
    child_metadata,
    selector_labels,
)
from kvtrace_operator.render.networkpolicy import TELEMETRY_CLIENT_LABEL, kvcluster_policies
from kvtrace_operator.render.otel_env import flag_variable, node_trace_flags, otel_environment
from kvtrace_operator.render.statefulset import (
    anti_entropy_interval,
    default_consistency,
    render_statefulset,
)
from kvtrace_operator.render.validate import validate_kvcluster
from kvtrace_operator.spec import KVClusterSpec, parse_pipeline


def quorum(replication_factor: int) -> int:
    return replication_factor // 2 + 1


def max_unavailable(replication_factor: int) -> int:
    """Members that may be down at once while every key keeps a quorum of its replicas.

    A key lives on ``replicationFactor`` consecutive ring members, and any set of members
    can be the replicas of some key; so at most ``rf - quorum(rf)`` members may be
    voluntarily disrupted (1 of 3, 2 of 5; 0 when rf is 1 or 2: then the PDB blocks
    voluntary evictions, which is the truth: any eviction loses a quorum).
    """
    return replication_factor - quorum(replication_factor)


def peers_file(cluster: dict[str, Any], replicas: int) -> str:
    """``ID=HOST:PORT`` per line: the StatefulSet's stable DNS names."""
    name, namespace = names.name_of(cluster), names.namespace_of(cluster)
    return "".join(
        f"{name}-{i}={names.member_address(name, namespace, i)}\n" for i in range(replicas)
    )


def node_settings(spec: KVClusterSpec, trace_flags: Sequence[tuple[str, str]]) -> str:
    """The node settings the args carry, as KVNODE_* lines (what the checksum covers)."""
    settings: list[tuple[str, object]] = [
        ("KVNODE_REPLICATION_FACTOR", spec.replication_factor),
        ("KVNODE_CONSISTENCY", default_consistency(spec)),
        ("KVNODE_ANTI_ENTROPY_INTERVAL", anti_entropy_interval(spec)),
    ]
    settings += [(flag_variable(flag), value) for flag, value in trace_flags]
    return "".join(f"{key}={value}\n" for key, value in settings)


def service_account(cluster: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(cluster, names.name_of(cluster), KVNODE),
        "automountServiceAccountToken": False,
    }


def node_configmap(
    cluster: dict[str, Any], spec: KVClusterSpec, trace_flags: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    name = names.name_of(cluster)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(cluster, names.node_configmap(name), KVNODE),
        "data": {
            "peers": peers_file(cluster, spec.replicas),
            "settings": node_settings(spec, trace_flags),
        },
    }


def peers_service(cluster: dict[str, Any]) -> dict[str, Any]:
    """Headless: stable member DNS names, published before the members are ready."""
    name = names.name_of(cluster)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(cluster, names.peers_service(name), KVNODE),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(cluster, KVNODE),
            "ports": [
                podspec.service_port("peer", names.PEER_PORT),
                podspec.service_port("client", names.CLIENT_PORT),
            ],
        },
    }


def client_service(cluster: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(cluster, names.name_of(cluster), KVNODE),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cluster, KVNODE),
            "ports": [podspec.service_port("client", names.CLIENT_PORT)],
        },
    }


def disruption_budget(cluster: dict[str, Any], spec: KVClusterSpec) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(cluster, names.name_of(cluster), KVNODE),
        "spec": {
            "maxUnavailable": max_unavailable(spec.replication_factor),
            # A member that is not ready holds no quorum share: evicting it never hurts.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector_labels(cluster, KVNODE)},
        },
    }


def config_checksum(configmap: dict[str, Any], otel_env: list[dict[str, Any]]) -> str:
    """What rolls the pods: node settings and OTel env, never the peers list (scaling
    rewrites the peers file in place, without restarting members)."""
    data = {key: value for key, value in configmap["data"].items() if key != "peers"}
    return checksum({"config": data, "env": otel_env})


def render_kvcluster(
    cluster: dict[str, Any], pipeline: dict[str, Any] | None, *, images: Images = DEFAULT_IMAGES
) -> list[dict[str, Any]]:
    """Its own OTLP token Secret (traced by an auth pipeline), its clients' token Secrets
    (auth on), ServiceAccount, ConfigMap, headless Service, client Service, StatefulSet,
    PodDisruptionBudget, NetworkPolicy (unless ``networkPolicy.enabled`` is false);
    ``pipeline`` None renders an untraced cluster; ``images.kvnode`` is the members' image
    unless the cluster names its own."""
    spec = validate_kvcluster(cluster)
    otel_env = otel_environment(cluster, pipeline)  # validates the pipeline first
    pipeline_spec = parse_pipeline(pipeline.get("spec")) if pipeline is not None else None
    trace_flags = node_trace_flags(pipeline_spec)
    configmap = node_configmap(cluster, spec, trace_flags)
    # Traced members carry the label the pipeline's NetworkPolicy lets in.
    pod_labels = {TELEMETRY_CLIENT_LABEL: names.name_of(pipeline)} if pipeline is not None else {}
    # How a scraper reaches the members' /metrics (the client port serves TLS by default).
    pod_labels[CLIENT_SCHEME_LABEL] = "https" if kvsecurity.tls_on(spec) else "http"
    # The pipeline's CA bundle when its receivers serve TLS; the cluster's own TLS and tokens.
    volumes = (
        security.client_volumes(pipeline_spec, names.name_of(pipeline))
        if pipeline is not None and pipeline_spec is not None
        else []
    ) + kvsecurity.volumes(cluster, spec)
    statefulset = render_statefulset(
        cluster,
        spec,
        spec.image or images.kvnode,
        otel_env,
        config_checksum(configmap, otel_env),
        trace_flags,
        pod_labels,
        volumes,
    )
    token = security.client_secret(cluster, pipeline_spec)  # its own OTLP token, first
    return [
        *([token] if token else []),
        *kvsecurity.token_secrets(cluster, spec),  # its clients' tokens, before the members
        service_account(cluster),
        configmap,
        peers_service(cluster),
        client_service(cluster),
        statefulset,
        disruption_budget(cluster, spec),
        *kvcluster_policies(cluster, spec),
    ]
