"""``render_all``: what ``kvtrace render`` prints for a set of custom resources."""

from __future__ import annotations

from typing import Any

from kvtrace.shared import api
from kvtrace_operator.render import names
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.images import DEFAULT_IMAGES, Images
from kvtrace_operator.render.kvcluster import render_kvcluster
from kvtrace_operator.render.pipeline import render_pipeline
from kvtrace_operator.render.validate import validate_kvcluster, validate_pipeline

KINDS = (api.KVCLUSTER, api.PIPELINE)


def check_kind(resource: Any) -> str:
    """The resource's kind, or a SpecError naming what was expected."""
    if not isinstance(resource, dict):
        raise SpecError(
            "(document)", f"expected a mapping (a Kubernetes object), got {type(resource).__name__}"
        )
    kind = resource.get("kind")
    if kind not in KINDS:
        raise SpecError("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    if resource.get("apiVersion") != api.API_VERSION:
        raise SpecError(
            "apiVersion",
            f"expected {api.API_VERSION} for {kind}, got {resource.get('apiVersion')!r}",
        )
    return str(kind)


def pipeline_ref(cluster: dict[str, Any]) -> str | None:
    ref = (cluster.get("spec") or {}).get("tracing", {}).get("pipelineRef", {}).get("name")
    return str(ref) if ref else None


def referenced_pipeline(
    cluster: dict[str, Any], resources: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The TracingPipeline among ``resources`` that ``cluster`` references (same namespace)."""
    wanted = pipeline_ref(cluster)
    for resource in resources:
        if (
            wanted
            and isinstance(resource, dict)
            and resource.get("kind") == api.PIPELINE
            and names.name_of(resource) == wanted
            and names.namespace_of(resource) == names.namespace_of(cluster)
        ):
            return resource
    return None


def validate_resource(resource: dict[str, Any]) -> None:
    """SpecError unless ``resource`` is a KVCluster or TracingPipeline the operator can render."""
    if check_kind(resource) == api.KVCLUSTER:
        validate_kvcluster(resource)
    else:
        validate_pipeline(resource)


def render_one(
    resource: dict[str, Any], resources: list[dict[str, Any]], *, images: Images = DEFAULT_IMAGES
) -> list[dict[str, Any]]:
    if check_kind(resource) == api.KVCLUSTER:
        return render_kvcluster(resource, referenced_pipeline(resource, resources), images=images)
    return render_pipeline(resource, images=images)


def render_all(
    resources: list[dict[str, Any]], *, images: Images = DEFAULT_IMAGES
) -> list[dict[str, Any]]:
    """Children of every KVCluster (traced when its pipeline is among ``resources``) and
    every TracingPipeline, in input order (``images``: the operator-wide default images). Raises
    SpecError before returning anything."""
    objects: list[dict[str, Any]] = []
    for resource in resources:
        objects += render_one(resource, resources, images=images)
    return objects
