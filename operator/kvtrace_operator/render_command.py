"""``kvtrace render -f FILE...``: print exactly the objects the operator would apply.

Everything is read, checked and rendered before anything is printed: bad input prints one
message naming the file, the resource and the field, and exits 1 with nothing on stdout.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from kvtrace.shared.api import KVCLUSTER
from kvtrace_operator.render import SpecError, pipeline_ref, referenced_pipeline
from kvtrace_operator.render.images import OPERATOR_IMAGE
from kvtrace_operator.render.names import name_of, namespace_of
from kvtrace_operator.render.output import dump_all
from kvtrace_operator.render.resources import check_kind, render_one, validate_resource


class InputError(Exception):
    """Bad input, with the whole message to print."""


@dataclass
class Document:
    source: str
    index: int
    resource: dict[str, Any]

    def where(self) -> str:
        kind = self.resource.get("kind", "?")
        return f"{self.source} (document {self.index + 1}, {kind}/{name_of(self.resource) or '?'})"


def read_text(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def load_documents(path: str, stdin: TextIO) -> list[Document]:
    source = "<stdin>" if path == "-" else path
    try:
        loaded = list(yaml.safe_load_all(read_text(path, stdin)))
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: malformed YAML: {exc}") from exc
    documents = []
    for index, resource in enumerate(loaded):
        if resource is None:
            continue
        document = Document(source, index, resource)
        try:
            check_kind(resource)
        except SpecError as exc:
            where = document.where() if isinstance(resource, dict) else f"{source} (document {index + 1})"
            raise InputError(f"{where}: {exc.field}: {exc.message}") from exc
        documents.append(document)
    return documents


def _attributed(document: Document, exc: SpecError) -> InputError:
    return InputError(f"{document.where()}: {exc.field}: {exc.message}")


def render_documents(documents: list[Document], proxy_image: str = OPERATOR_IMAGE) -> list[dict[str, Any]]:
    """Validate every document, then render each; an error names the document it is about
    (a KVCluster is never blamed for a broken pipeline it references). ``proxy_image``:
    the ``query-proxy`` sidecar's default image (``--query-proxy-image``)."""
    for document in documents:
        try:
            validate_resource(document.resource)
        except SpecError as exc:
            raise _attributed(document, exc) from exc
    resources = [document.resource for document in documents]
    objects: list[dict[str, Any]] = []
    for document in documents:
        try:
            objects += render_one(document.resource, resources, proxy_image=proxy_image)
        except SpecError as exc:
            raise _attributed(document, exc) from exc
    return objects


def missing_pipeline_warnings(documents: list[Document]) -> list[str]:
    resources = [document.resource for document in documents]
    warnings = []
    for document in documents:
        ref = pipeline_ref(document.resource) if document.resource.get("kind") == KVCLUSTER else None
        if ref and referenced_pipeline(document.resource, resources) is None:
            warnings.append(f"warning: {document.where()}: TracingPipeline {ref!r} "
                            f"(namespace {namespace_of(document.resource)}) is not among the inputs; "
                            "rendering it untraced (OTEL_SDK_DISABLED=true), as the operator would "
                            "while the pipeline is missing")
    return warnings


def main(args: Any, stdout: TextIO | None = None, stderr: TextIO | None = None,
         stdin: TextIO | None = None) -> int:
    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    try:
        documents = [document for path in args.files for document in load_documents(path, inp)]
        if not documents:
            raise InputError(f"{', '.join(args.files)}: no KVCluster or TracingPipeline found")
        objects = render_documents(documents, getattr(args, "query_proxy_image", OPERATOR_IMAGE))
    except InputError as exc:
        print(f"kvtrace render: {exc}", file=err)
        return 1
    for warning in missing_pipeline_warnings(documents):
        print(warning, file=err)
    out.write(dump_all(objects))
    return 0
