"""``kvtrace render -f FILE|DIR...``: print exactly the objects the operator would apply.

Everything is read, checked and rendered before anything is printed. Every document is
checked against its CRD's own schema and CEL rules as the API server's strict field
validation does (``render.strict``, with the CRDs shipped in ``kvtrace_operator.crds``), and
every error of every document is printed, each naming the file, the resource and the field;
then the exit code is 1 with nothing on stdout. ``-f DIR`` reads the directory's .yaml, .yml
and .json files as kubectl does (``-R`` recursively); ``-n NS`` is the namespace of documents
without one; ``-o json`` prints a v1 List.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from kvtrace.shared.api import KVCLUSTER
from kvtrace_operator import crds
from kvtrace_operator.render import SpecError, pipeline_ref, referenced_pipeline, strict
from kvtrace_operator.render.images import DEFAULT_IMAGES, Images, images_from_args
from kvtrace_operator.render.names import name_of, namespace_of
from kvtrace_operator.render.output import dump_all, dump_json_list
from kvtrace_operator.render.resources import check_kind, render_one, validate_resource

# What kubectl reads from a directory given to -f.
EXTENSIONS = (".json", ".yaml", ".yml")
OUTPUTS = {"yaml": dump_all, "json": dump_json_list}


class InputError(Exception):
    """Bad input, with the whole message to print (one line per problem)."""


@dataclass
class Document:
    source: str
    index: int
    resource: dict[str, Any]

    def where(self) -> str:
        kind = self.resource.get("kind", "?")
        return f"{self.source} (document {self.index + 1}, {kind}/{name_of(self.resource) or '?'})"


class _StrictLoader(yaml.SafeLoader):
    """YAML with the API server's strict decoding: a key twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate field {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def input_files(paths: list[str], recursive: bool = False) -> list[str]:
    """``paths`` with each directory replaced by its .json/.yaml/.yml files, sorted (as
    kubectl does; ``recursive``: also in subdirectories)."""
    files: list[str] = []
    for path in paths:
        if path == "-" or not os.path.isdir(path):
            files.append(path)
            continue
        found = sorted(
            os.path.join(root, name)
            for root, dirs, names in os.walk(path)
            for name in names
            if name.endswith(EXTENSIONS)
            if recursive or root == path
        )
        if not found:
            raise InputError(
                f"{path}: no {', '.join(EXTENSIONS)} files in this directory"
                + ("" if recursive else " (-R reads its subdirectories too)")
            )
        files += found
    return files


def read_text(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _yaml_error(source: str, exc: yaml.YAMLError) -> InputError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return InputError(f"{where}: malformed YAML: {problem}" + (f" ({context})" if context else ""))


def load_documents(path: str, stdin: TextIO) -> list[Document]:
    source = "<stdin>" if path == "-" else path
    try:
        loaded = list(yaml.load_all(read_text(path, stdin), Loader=_StrictLoader))
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from exc
    documents = []
    for index, resource in enumerate(loaded):
        if resource is None:
            continue
        document = Document(source, index, resource)
        try:
            check_kind(resource)
        except SpecError as exc:
            where = (
                document.where()
                if isinstance(resource, dict)
                else f"{source} (document {index + 1})"
            )
            raise InputError(f"{where}: {exc.field}: {exc.message}") from exc
        documents.append(document)
    return documents


def strict_problems(documents: list[Document]) -> tuple[list[str], list[str]]:
    """(errors, warnings) of every document against its CRD: every error, not the first.
    Each document becomes what the API server would store (its schema defaults applied), the
    shape the render relies on."""
    schemas = crds.schemas()
    errors: list[str] = []
    warnings: list[str] = []
    for document in documents:
        resource = document.resource
        report = strict.check(resource, schemas[(resource["apiVersion"], resource["kind"])])
        document.resource = report.resource
        errors += [f"{document.where()}: {error}" for error in report.errors]
        warnings += [
            f"warning: {document.where()}: rule not checked here (the API server will): {rule}"
            for rule in report.unchecked
        ]
    return errors, warnings


def _attributed(document: Document, exc: SpecError) -> InputError:
    return InputError(f"{document.where()}: {exc.field}: {exc.message}")


def render_documents(
    documents: list[Document], images: Images = DEFAULT_IMAGES
) -> list[dict[str, Any]]:
    """Validate every document, then render each; an error names the document it is about
    (a KVCluster is never blamed for a broken pipeline it references). ``images``:
    the operator-wide default images (``--kvnode-image``, ..., ``--query-proxy-image``)."""
    for document in documents:
        try:
            validate_resource(document.resource)
        except SpecError as exc:
            raise _attributed(document, exc) from exc
    resources = [document.resource for document in documents]
    objects: list[dict[str, Any]] = []
    for document in documents:
        try:
            objects += render_one(document.resource, resources, images=images)
        except SpecError as exc:
            raise _attributed(document, exc) from exc
    return objects


def missing_pipeline_warnings(documents: list[Document]) -> list[str]:
    resources = [document.resource for document in documents]
    warnings = []
    for document in documents:
        ref = (
            pipeline_ref(document.resource) if document.resource.get("kind") == KVCLUSTER else None
        )
        if ref and referenced_pipeline(document.resource, resources) is None:
            warnings.append(
                f"warning: {document.where()}: TracingPipeline {ref!r} "
                f"(namespace {namespace_of(document.resource)}) is not among the inputs; "
                "rendering it untraced (OTEL_SDK_DISABLED=true), as the operator would "
                "while the pipeline is missing"
            )
    return warnings


def in_namespace(documents: list[Document], namespace: str | None) -> list[Document]:
    """``-n NAMESPACE`` as kubectl applies it: the namespace of documents without one; a
    document naming another is an error."""
    if not namespace:
        return documents
    for document in documents:
        metadata = document.resource.get("metadata")
        if not isinstance(metadata, dict):
            continue
        given = metadata.get("namespace")
        if given and given != namespace:
            raise InputError(
                f"{document.where()}: metadata.namespace: {given!r} does not match "
                f"-n {namespace!r}: pass -n {given} or remove it from the file"
            )
        document.resource = {**document.resource, "metadata": {**metadata, "namespace": namespace}}
    return documents


def checked_documents(args: Any, stdin: TextIO) -> tuple[list[Document], list[str]]:
    """The documents of ``args.files`` and the warnings about them; InputError with every
    problem when any document is invalid."""
    files = input_files(args.files, getattr(args, "recursive", False))
    documents = [document for path in files for document in load_documents(path, stdin)]
    if not documents:
        raise InputError(f"{', '.join(args.files)}: no KVCluster or TracingPipeline found")
    documents = in_namespace(documents, getattr(args, "namespace", None))
    errors, warnings = strict_problems(documents)
    if errors:
        raise InputError("\n".join(errors))
    return documents, warnings


def main(
    args: Any,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    try:
        documents, warnings = checked_documents(args, inp)
        objects = render_documents(documents, images_from_args(args))
    except InputError as exc:
        for line in str(exc).splitlines():
            print(f"kvtrace render: {line}", file=err)
        return 1
    for warning in warnings + missing_pipeline_warnings(documents):
        print(warning, file=err)
    out.write(OUTPUTS[getattr(args, "output", "yaml")](objects))
    return 0
