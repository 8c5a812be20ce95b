"""The KV node StatefulSet (docs/design.md section 3 contract)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from kvtrace_operator.render import kvsecurity, names, podspec
from kvtrace_operator.render.labels import KVNODE, child_metadata, selector_labels, standard_labels
from kvtrace_operator.render.otel_env import downward_env
from kvtrace_operator.spec import KVClusterSpec
from kvtrace_operator.spec.durations import single_unit
from kvtrace_operator.spec.kvcluster import Scheduling, Storage

COMMAND = ["opentelemetry-instrument", "kvtrace", "node", "serve"]
_STRENGTH = {"one": 0, "quorum": 1, "all": 2}


def default_consistency(spec: KVClusterSpec) -> str:
    """``--consistency``: the stronger of the read and write defaults (the node has one
    default level for requests that name none)."""
    read, write = spec.consistency.read, spec.consistency.write
    return read if _STRENGTH[read] >= _STRENGTH[write] else write


def anti_entropy_interval(spec: KVClusterSpec) -> str:
    """``--anti-entropy-interval`` in a form the node's flag accepts."""
    return single_unit(spec.anti_entropy_interval.text, spec.anti_entropy_interval.field)


def node_args(spec: KVClusterSpec, trace_flags: Sequence[tuple[str, str]]) -> list[str]:
    """Only flags ``kvtrace node serve`` has (docs/design.md section 3); ``trace_flags``: what
    the pipeline asks of the nodes (``otel_env.node_trace_flags``: raw keys, retroactive)."""
    interval = anti_entropy_interval(spec)
    args = [
        "--id=$(POD_NAME)",
        f"--client-addr=0.0.0.0:{names.CLIENT_PORT}",
        f"--peer-addr=0.0.0.0:{names.PEER_PORT}",
        f"--peers-file={names.PEERS_FILE}",
        f"--data-dir={names.DATA_DIR}",
        f"--replication-factor={spec.replication_factor}",
        f"--consistency={default_consistency(spec)}",
        f"--anti-entropy-interval={interval}",
    ]
    args += [f"{flag}={value}" for flag, value in trace_flags]
    return args + kvsecurity.node_args(spec)


def node_env(otel_env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    identity = downward_env()
    taken = {item["name"] for item in identity}
    return identity + [item for item in otel_env if item["name"] not in taken]


def node_container(
    spec: KVClusterSpec,
    image: str,
    otel_env: list[dict[str, Any]],
    trace_flags: Sequence[tuple[str, str]],
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    container = {
        "name": "kvnode",
        "image": image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(COMMAND),
        "args": node_args(spec, trace_flags),
        "env": node_env(otel_env),
        "ports": [podspec.port("client", names.CLIENT_PORT), podspec.port("peer", names.PEER_PORT)],
        "livenessProbe": podspec.http_probe(
            "/healthz", "client", period=10, scheme=kvsecurity.probe_scheme(spec)
        ),
        "readinessProbe": podspec.http_probe(
            "/readyz", "client", period=5, scheme=kvsecurity.probe_scheme(spec)
        ),
        "volumeMounts": [
            {"name": "data", "mountPath": names.DATA_DIR},
            {"name": "config", "mountPath": names.CONFIG_DIR, "readOnly": True},
            podspec.tmp_mount(),
            *(extra_mounts or []),
        ],
        "securityContext": podspec.container_security_context(),
    }
    return podspec.with_resources(container, spec.resources)


def anti_affinity_term(cluster: dict[str, Any]) -> dict[str, Any]:
    return {
        "labelSelector": {"matchLabels": selector_labels(cluster, KVNODE)},
        "topologyKey": "kubernetes.io/hostname",
    }


def affinity(cluster: dict[str, Any], scheduling: Scheduling) -> dict[str, Any] | None:
    """The user's affinity, plus pod anti-affinity on the instance unless they set their own."""
    result = copy.deepcopy(scheduling.affinity or {})
    policy = scheduling.pod_anti_affinity
    if policy != "none" and "podAntiAffinity" not in result:
        term = anti_affinity_term(cluster)
        if policy == "required":
            result["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
        else:
            result["podAntiAffinity"] = {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": term}
                ]
            }
    return result or None


def pod_spec(
    cluster: dict[str, Any],
    spec: KVClusterSpec,
    image: str,
    otel_env: list[dict[str, Any]],
    trace_flags: Sequence[tuple[str, str]],
    extra_volumes: list[tuple[dict[str, Any], dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """``extra_volumes``: (volume, mount) pairs, e.g. the pipeline's CA certificate."""
    name = names.name_of(cluster)
    scheduling = spec.scheduling
    extra = extra_volumes or []
    pod: dict[str, Any] = {
        "serviceAccountName": name,
        "automountServiceAccountToken": False,
        # No Docker-link env vars: a Service named e.g. kvnode-data would otherwise inject
        # KVNODE_DATA_* variables, which the node reads as its own configuration.
        "enableServiceLinks": False,
        "securityContext": podspec.pod_security_context(),
        "terminationGracePeriodSeconds": 30,
        "containers": [
            node_container(spec, image, otel_env, trace_flags, [mount for _, mount in extra])
        ],
        "volumes": [
            podspec.config_volume("config", names.node_configmap(name), "peers", "peers"),
            podspec.tmp_volume(),
            *(volume for volume, _ in extra),
        ],
    }
    pod_affinity = affinity(cluster, scheduling)
    if pod_affinity:
        pod["affinity"] = pod_affinity
    placement = {
        "nodeSelector": scheduling.node_selector,
        "tolerations": scheduling.tolerations,
        "topologySpreadConstraints": scheduling.topology_spread_constraints,
        "priorityClassName": scheduling.priority_class_name,
    }
    for key, value in placement.items():
        if value:
            pod[key] = copy.deepcopy(value)
    return pod


def volume_claim(cluster: dict[str, Any], storage: Storage) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "metadata": {"name": "data", "labels": standard_labels(cluster, KVNODE)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": storage.size.text}},
        },
    }
    if storage.storage_class_name:
        claim["spec"]["storageClassName"] = storage.storage_class_name
    return claim


def render_statefulset(
    cluster: dict[str, Any],
    spec: KVClusterSpec,
    image: str,
    otel_env: list[dict[str, Any]],
    config_checksum: str,
    trace_flags: Sequence[tuple[str, str]] = (),
    pod_labels: dict[str, str] | None = None,
    extra_volumes: list[tuple[dict[str, Any], dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """OrderedReady, one pod at a time: an image change never takes down more than one member.
    ``pod_labels``: extra labels of the members (not in the selector), e.g. the one that lets
    them through the pipeline's NetworkPolicy; ``image``: the members' (``spec.image``, else
    the operator's default)."""
    name = names.name_of(cluster)
    labels = {**standard_labels(cluster, KVNODE), **(pod_labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": child_metadata(cluster, name, KVNODE),
        "spec": {
            "replicas": spec.replicas,
            "serviceName": names.peers_service(name),
            "podManagementPolicy": "OrderedReady",
            # A member removed by scaling was drained first; its stale volume must not come
            # back with a later scale-up (deleted keys whose tombstones were purged would
            # reappear). Deleting the KVCluster keeps the volumes.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Delete",
            },
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "selector": {"matchLabels": selector_labels(cluster, KVNODE)},
            "template": {
                "metadata": podspec.template_metadata(labels, config_checksum),
                "spec": pod_spec(cluster, spec, image, otel_env, trace_flags, extra_volumes),
            },
            "volumeClaimTemplates": [volume_claim(cluster, spec.storage)],
        },
    }
