"""Write the chart's CRD templates (charts/kvtrace-operator/templates/crds/) from the CRDs in
crds/, their single source, as cert-manager's chart templates its CRDs: Helm never upgrades
what a chart's crds/ folder holds, but it upgrades templates. Each template is the CRD's text
unchanged from `spec:` on, wrapped in `crds.install` (default true), with the chart's labels
and, with `crds.keep` (default true), `helm.sh/resource-policy: keep` (helm uninstall leaves
the CRDs, and so every custom resource, in place). `make crds` runs it; a unit test fails on
drift (`--check`).

Usage: python tools/chart/crd_templates.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "crds"
TARGET = REPO / "charts" / "kvtrace-operator" / "templates" / "crds"
METADATA_KEYS = {"name", "labels", "annotations"}


class CRDError(ValueError):
    """A source CRD the generator cannot template faithfully."""


def _mapping_lines(mapping: dict[str, str], indent: int) -> list[str]:
    return [f"{' ' * indent}{key}: {json.dumps(value)}" for key, value in mapping.items()]


def template(source: Path) -> str:
    """The chart template of one CRD file."""
    text = source.read_text()
    where = source.relative_to(REPO) if source.is_relative_to(REPO) else source
    if "{{" in text or "}}" in text:
        raise CRDError(f"{where}: holds '{{{{' or '}}}}', which helm would read as a template")
    crd: Any = yaml.safe_load(text)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise CRDError(f"{where}: expected one CustomResourceDefinition")
    metadata = crd["metadata"]
    unknown = set(metadata) - METADATA_KEYS
    if unknown:
        raise CRDError(
            f"{where}: metadata.{sorted(unknown)[0]} is not templated: expected only "
            f"{', '.join(sorted(METADATA_KEYS))}"
        )
    head, marker, spec = text.partition("\nspec:\n")
    if not marker:
        raise CRDError(f"{where}: expected a top-level 'spec:' line after metadata")
    lines = [
        f"{{{{- /* Generated from {where} by `make crds` (tools/chart/crd_templates.py): "
        "do not edit. */}}",
        "{{- if .Values.crds.install }}",
        f"apiVersion: {crd['apiVersion']}",
        f"kind: {crd['kind']}",
        "metadata:",
        f"  name: {metadata['name']}",
        "  labels:",
        *_mapping_lines(metadata.get("labels") or {}, 4),
        '    {{- include "kvtrace-operator.crdLabels" . | nindent 4 }}',
    ]
    annotations = metadata.get("annotations") or {}
    if annotations:
        lines += ["  annotations:", *_mapping_lines(annotations, 4)]
        lines += [
            "    {{- if .Values.crds.keep }}",
            "    helm.sh/resource-policy: keep",
            "    {{- end }}",
        ]
    else:
        lines += [
            "  {{- if .Values.crds.keep }}",
            "  annotations:",
            "    # helm uninstall and crds.install=false leave the CRD (and every resource) in place.",
            "    helm.sh/resource-policy: keep",
            "  {{- end }}",
        ]
    return "\n".join(lines) + "\nspec:\n" + spec.rstrip("\n") + "\n{{- end }}\n"


def wanted() -> dict[str, str]:
    """File name -> template, for every CRD of crds/."""
    sources = sorted(SOURCE.glob("*.yaml"))
    if not sources:
        raise CRDError(f"{SOURCE.relative_to(REPO)}: no CRD files")
    return {source.name: template(source) for source in sources}


def stale(files: dict[str, str]) -> list[str]:
    """What differs between ``files`` and the templates on disk (missing, extra, changed)."""
    present = {path.name for path in TARGET.glob("*.yaml")} if TARGET.is_dir() else set()
    problems = [f"extra {name}" for name in sorted(present - set(files))]
    for name, text in files.items():
        path = TARGET / name
        if not path.exists():
            problems.append(f"missing {name}")
        elif path.read_text() != text:
            problems.append(f"changed {name}")
    return problems


def main(argv: list[str]) -> int:
    try:
        files = wanted()
    except CRDError as exc:
        print(f"crd_templates: {exc}", file=sys.stderr)
        return 1
    if "--check" in argv:
        problems = stale(files)
        if problems:
            print(
                f"{TARGET.relative_to(REPO)} is stale ({'; '.join(problems)}): run `make crds`",
                file=sys.stderr,
            )
            return 1
        return 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for path in TARGET.glob("*.yaml"):
        if path.name not in files:
            path.unlink()
    for name, text in files.items():
        (TARGET / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
