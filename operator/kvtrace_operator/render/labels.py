"""Standard labels, selectors, owner references and object metadata (docs/design.md section 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvtrace.shared.api import API_VERSION, MANAGED_BY
from kvtrace_operator.render.names import name_of, namespace_of

PART_OF = "kvtrace"
CHECKSUM_ANNOTATION = "kvtrace.dev/config-checksum"
# On KV members: the scheme of their client port (https unless the cluster's TLS is off), which
# the pipeline's Prometheus scrapes /metrics with.
CLIENT_SCHEME_LABEL = "kvtrace.dev/client-scheme"

# Components.
KVNODE = "kvnode"
COLLECTOR = "collector"
COLLECTOR_LOADBALANCER = "collector-loadbalancer"
COLLECTOR_SAMPLING = "collector-sampling"
JAEGER = "jaeger"
PROMETHEUS = "prometheus"
INSTRUMENTATION = "instrumentation"


def selector_labels(resource: dict[str, Any], component: str) -> dict[str, str]:
    """What a workload's selector matches: the kind, the instance and the component."""
    return {
        "app.kubernetes.io/name": str(resource.get("kind", "")).lower(),
        "app.kubernetes.io/instance": name_of(resource),
        "app.kubernetes.io/component": component,
    }


def owner_labels(resource: Mapping[str, Any]) -> dict[str, str]:
    """What every child of ``resource`` carries whatever its component: the label selector
    that finds one owner's children (the API server filters, not the operator)."""
    return {
        "app.kubernetes.io/name": str(resource.get("kind", "")).lower(),
        "app.kubernetes.io/instance": str((resource.get("metadata") or {}).get("name", "")),
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def standard_labels(resource: dict[str, Any], component: str) -> dict[str, str]:
    return {
        **selector_labels(resource, component),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector_string(resource: dict[str, Any], component: str) -> str:
    """A label selector in string form, e.g. for a KVCluster's ``status.selector``."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(resource, component).items())


def owner_reference(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": resource["kind"],
        "name": name_of(resource),
        "uid": resource["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(resource: dict[str, Any], name: str, component: str) -> dict[str, Any]:
    """Metadata of a child object: namespace, standard labels and the owner reference.

    A resource read from a file (``kvtrace render``) has no uid yet; its children then carry
    no owner reference, since the API server would reject a made-up one.
    """
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace_of(resource),
        "labels": standard_labels(resource, component),
    }
    if resource.get("metadata", {}).get("uid"):
        metadata["ownerReferences"] = [owner_reference(resource)]
    return metadata
