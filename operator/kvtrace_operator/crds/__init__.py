"""The CRDs as package data: byte-identical copies of the repository's crds/ (``make crds``
writes them; a unit test fails on drift), so an installed ``kvtrace render`` validates
against the same schema the API server enforces.

Reads package files only; never imports kopf or a Kubernetes client.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml


@functools.cache
def definitions() -> tuple[dict[str, Any], ...]:
    """Every CustomResourceDefinition shipped with the package, by file name."""
    files = sorted(
        (entry for entry in resources.files(__name__).iterdir() if entry.name.endswith(".yaml")),
        key=lambda entry: entry.name,
    )
    return tuple(yaml.safe_load(entry.read_text(encoding="utf-8")) for entry in files)


def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> that served version's openAPIV3Schema."""
    found = {}
    for definition in definitions():
        spec = definition["spec"]
        for version in spec["versions"]:
            if version.get("served", True):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                found[key] = version["schema"]["openAPIV3Schema"]
    return found
