"""Spec defaults, identical to the ``default:`` values of the CRD schemas.

The API server applies the schema defaults before the operator sees a resource; ``kvtrace
render`` reads files that may omit them, so ``parse_kvcluster`` / ``parse_pipeline`` apply the
same ones here, once, before reading the typed spec. Nothing else re-defaults. A unit test
derives the defaults from ``crds/*.yaml`` and compares them with these trees. Images have no
schema default: the operator's own (``render/images.py`` ``Images``) fills them at render time.

A tree maps a field to its default value, or to a nested tree when the field is an object
that itself defaults to ``{}`` (so its children get their defaults too). ``Each`` applies
a tree to every element of a list, like defaults inside ``items`` of an array schema.
"""

from __future__ import annotations

import copy
from typing import Any


class Each(dict):  # type: ignore[type-arg]
    """Defaults for every element of a list field (which itself has no default)."""


# security.tls, the same in both CRDs.
TLS_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "duration": "2160h",
    "renewBefore": "720h",
    "caDuration": "26280h",
    "caRenewBefore": "4320h",
}

KVCLUSTER_DEFAULTS: dict[str, Any] = {
    "replicas": 3,
    "imagePullPolicy": "IfNotPresent",
    "replicationFactor": 3,
    "consistency": {"read": "quorum", "write": "quorum"},
    "storage": {"size": "1Gi"},
    "antiEntropy": {"interval": "10m"},
    "scheduling": {"podAntiAffinity": "preferred"},
    "networkPolicy": {"enabled": True, "clientAccess": "all"},
    "security": {"auth": {"enabled": True}, "tls": TLS_DEFAULTS},
}

PIPELINE_DEFAULTS: dict[str, Any] = {
    "sampling": {
        "mode": "production",
        "ratio": 0.1,
        "latencyThreshold": "500ms",
        "decisionWait": "10s",
        "numTraces": 50000,
        "retroactive": {"bufferBytes": 33554432, "bufferAge": "5s"},
    },
    "collector": {
        "replicas": 1,
        "batch": {"sendBatchSize": 8192, "timeout": "200ms"},
        "memoryLimiter": {"checkInterval": "1s", "limitPercentage": 80, "spikeLimitPercentage": 25},
        "resourceDetection": {
            "detectors": ["env", "system", "k8snode"],
            "override": False,
            "timeout": "5s",
        },
        "kubernetesAttributes": {
            "enabled": True,
            "scope": "namespace",
            "metadata": [
                "k8s.namespace.name",
                "k8s.pod.name",
                "k8s.pod.uid",
                "k8s.pod.start_time",
                "k8s.node.name",
                "k8s.deployment.name",
                "k8s.replicaset.name",
                "k8s.replicaset.uid",
                "k8s.statefulset.name",
                "k8s.statefulset.uid",
                "k8s.daemonset.name",
                "k8s.daemonset.uid",
                "k8s.job.name",
                "k8s.job.uid",
                "k8s.cronjob.name",
                "k8s.container.name",
                "container.image.name",
            ],
        },
    },
    "jaeger": {
        "enabled": True,
        "storage": {"type": "memory", "maxTraces": 100000, "retention": "72h", "size": "10Gi"},
        "archive": {"enabled": False, "maxTraces": 10000, "retention": "720h"},
        "tenancy": {"enabled": False, "header": "x-tenant"},
        "query": {"auth": {"mode": "none"}},
    },
    "exporters": {
        "otlp": Each({"protocol": "grpc", "tls": {"insecure": False, "insecureSkipVerify": False}}),
        "debug": {"enabled": False, "verbosity": "basic"},
    },
    "receivers": {"zipkin": {"enabled": False}, "jaeger": {"enabled": False}},
    "redaction": {"hashAttributes": ["kvstore.key"], "defaultPatterns": True},
    "networkPolicy": {"enabled": True, "queryAccess": "namespace"},
    "metrics": {
        "enabled": True,
        "prometheus": {
            "retention": "24h",
            "storageSize": "1Gi",
            "scrapeInterval": "15s",
        },
    },
    "security": {"auth": {"enabled": True}, "tls": TLS_DEFAULTS},
}


def _apply(tree: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    for key, default in tree.items():
        if isinstance(default, Each):
            if isinstance(value.get(key), list):
                value[key] = [
                    _apply(default, item) if isinstance(item, dict) else item for item in value[key]
                ]
        elif isinstance(default, dict) and not isinstance(default, Each):
            if key not in value:
                value[key] = {}
            if isinstance(value[key], dict):
                _apply(default, value[key])
        elif key not in value:
            value[key] = copy.deepcopy(default)
    return value


def apply_defaults_kvcluster(spec: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of a KVCluster spec with every schema default filled in."""
    return _apply(KVCLUSTER_DEFAULTS, copy.deepcopy(spec or {}))


def apply_defaults_pipeline(spec: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of a TracingPipeline spec with every schema default filled in."""
    return _apply(PIPELINE_DEFAULTS, copy.deepcopy(spec or {}))
