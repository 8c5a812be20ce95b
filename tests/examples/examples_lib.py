"""The examples/ folders: loading them and checking them against the CRDs (schemas and rules)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
FOLDER = re.compile(r"^[0-9]{2}-[a-z0-9]+(-[a-z0-9]+)*$")
GROUP_VERSION = "kvtrace.dev/v1alpha1"


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


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Every error the API server's strict validation would report for ``doc`` (the CRD's
    schema and CEL rules, unknown fields rejected): ``kvtrace render``'s own check."""
    from kvtrace_operator.crds import schemas
    from kvtrace_operator.render import strict

    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in schemas():
        return [f"expected a {GROUP_VERSION} KVCluster or TracingPipeline, got {key[0]}/{key[1]}"]
    return [str(error) for error in strict.check(doc, schemas()[key]).errors]  # type: ignore[index]
