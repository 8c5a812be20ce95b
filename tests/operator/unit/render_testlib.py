"""Shared fixtures-as-functions of the operator unit tests: CRDs, resources, validation."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[3]
CRDS = REPO / "crds"
DATA = Path(__file__).resolve().parent / "data"
K8S_VERSION = "1.37"


@functools.cache
def crd(plural: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / f"kvtrace.dev_{plural}.yaml").read_text())


def spec_schema(plural: str) -> dict[str, Any]:
    schema = crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]


def schema_default(schema: dict[str, Any], value: Any) -> Any:
    """Structural-schema defaulting as the API server does it: a missing property with a
    default gets it, then defaulting continues inside (so ``default: {}`` objects fill)."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = schema_default(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        value = [schema_default(schema["items"], item) for item in value]
    return value


def validate_k8s(obj: dict[str, Any]) -> None:
    """Validate against the Kubernetes 1.37 OpenAPI schema, strictly (unknown fields fail)."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def kvcluster(
    name: str = "demo", namespace: str = "store", uid: str | None = "uid-kvc", **spec: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": metadata,
        "spec": spec,
    }


def pipeline(
    name: str = "traces", namespace: str = "store", uid: str | None = "uid-tp", **spec: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": metadata,
        "spec": spec,
    }


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        obj for obj in by_kind(objects, kind) if name is None or obj["metadata"]["name"] == name
    ]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def env_map(container: dict[str, Any]) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])
    }


def config_of(configmap: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(configmap["data"]["config.yaml"])
