"""The examples/ folders: loading them and checking them against the CRDs' OpenAPI schemas."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRDS = REPO / "crds"
FOLDER = re.compile(r"^[0-9]{2}-[a-z0-9]+(-[a-z0-9]+)*$")
GROUP_VERSION = "kvtrace.dev/v1alpha1"
PLURALS = {"KVCluster": "kvclusters", "TracingPipeline": "tracingpipelines"}


def folders() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.is_dir())


def manifest_files(folder: Path) -> list[Path]:
    """The files `kubectl apply -f FOLDER/` applies (it reads .yaml, .yml and .json)."""
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def documents(folder: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in manifest_files(folder):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


@functools.cache
def crd(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CRDS / f"kvtrace.dev_{PLURALS[kind]}.yaml").read_text())
    return loaded


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's openAPIV3Schema as a JSON schema that rejects unknown fields, as the API
    server does with strict field validation (kubectl's default): objects with properties
    and neither additionalProperties nor x-kubernetes-preserve-unknown-fields are closed."""
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Every violation of the CRD schema by ``doc`` (status and metadata excluded)."""
    import jsonschema

    kind = doc.get("kind")
    if doc.get("apiVersion") != GROUP_VERSION or kind not in PLURALS:
        return [f"expected a {GROUP_VERSION} KVCluster or TracingPipeline, got "
                f"{doc.get('apiVersion')}/{kind}"]
    version = crd(kind)["spec"]["versions"][0]
    schema = strict_schema(version["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))]
