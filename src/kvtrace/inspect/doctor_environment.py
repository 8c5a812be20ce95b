"""What the collector's resource detection found, for ``kvtrace doctor``: which detectors its
edge tier runs (the rendered config) and which attributes each added to the canary's
resource, read back from Jaeger. The canary sends ``service.name`` only, so everything else on
its resource was added by the collector.

Pure: no I/O; the doctor passes the parsed config and the canary's resource in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvtrace_operator.render.environment import CLOUD_PROVIDERS, NODE_DETECTOR

SENT = ("service.name",)  # what the canary's own resource carries
# The attributes a detector sets that no other one does (cloud detectors: see cloud.provider).
OWN_ATTRIBUTES = {
    "system": ("host.name", "os.type", "os.description", "host.arch", "host.id"),
    NODE_DETECTOR: ("k8s.node.name",),
}


@dataclass(frozen=True)
class Findings:
    """``found``: detector -> ``key=value`` it added; ``silent``: detectors that added nothing
    (``env`` never counts: the operator gives the collector no OTEL_RESOURCE_ATTRIBUTES)."""

    detectors: tuple[str, ...]
    found: dict[str, list[str]] = field(default_factory=dict)
    silent: tuple[str, ...] = ()


def detectors_of(config: Mapping[str, Any]) -> list[str]:
    """The detectors of the config's ``resource_detection`` processor in its traces pipeline."""
    traces = ((config.get("service") or {}).get("pipelines") or {}).get("traces") or {}
    for name in traces.get("processors") or []:
        if name.split("/")[0] in ("resource_detection", "resourcedetection"):
            processor = (config.get("processors") or {}).get(name) or {}
            return [
                "k8s_api" if d == "k8snode" else str(d) for d in processor.get("detectors") or []
            ]
    return []


def _added_by(detector: str, added: Mapping[str, Any]) -> list[str]:
    if detector in OWN_ATTRIBUTES:
        keys = [key for key in OWN_ATTRIBUTES[detector] if key in added]
    elif detector in CLOUD_PROVIDERS and added.get("cloud.provider") == CLOUD_PROVIDERS[detector]:
        keys = sorted(key for key in added if key.startswith(("cloud.", "k8s.cluster.")))
    else:
        keys = []
    return [f"{key}={added[key]}" for key in keys]


def findings(detectors: Sequence[str], resource: Mapping[str, Any]) -> Findings:
    """What each detector added to a resource that carried only :data:`SENT`."""
    added = {key: value for key, value in resource.items() if key not in SENT}
    found = {d: _added_by(d, added) for d in detectors if d != "env"}
    return Findings(
        detectors=tuple(detectors),
        found={d: attrs for d, attrs in found.items() if attrs},
        silent=tuple(d for d, attrs in found.items() if not attrs),
    )


def fix_for(detector: str, collector: str) -> str:
    """How to make a silent detector find something (or stop asking it)."""
    if detector == NODE_DETECTOR:
        return (
            f"grant the collector's ServiceAccount {collector} get on nodes (a ClusterRole and "
            "ClusterRoleBinding, docs/crds.md#rbac-the-cluster-admin-grants), or remove "
            "k8snode from spec.collector.resourceDetection.detectors"
        )
    if detector in CLOUD_PROVIDERS:
        return (
            f"the collector does not run on {CLOUD_PROVIDERS[detector]} (or its metadata "
            f"service is unreachable from the pod): remove {detector} from "
            "spec.collector.resourceDetection.detectors"
        )
    return f"read the collector's log for the {detector} detector's error"
