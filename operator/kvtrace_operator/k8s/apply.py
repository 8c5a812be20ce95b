"""Server-side apply of rendered children, and pruning of the ones no longer rendered.

Apply order is the render order. What exists is known without reading it again when the
caller has it (``observed``: handlers/children.py keeps it from the watch on our children),
else listed by the owner's labels (selected by the API server, then by owner UID). Each child
is applied only when it drifted: its render changed since the last apply (``last``, a
checksum per child), or the object differs from what that apply left (``Seen.version``: its
generation and labels/annotations, or its resourceVersion for kinds without a generation;
deleted counts too). Unchanged children cost no request. Existing children no longer rendered
are deleted after every apply succeeded (e.g. the load-balancing tier when the collector drops
to one replica).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from lightkube import ApiError, AsyncClient
from lightkube.types import CascadeType, PatchType

from kvtrace.shared.api import FIELD_MANAGER
from kvtrace_operator.k8s.client import resource_class, to_dict
from kvtrace_operator.k8s.secrets import ensure_generated, is_generated
from kvtrace_operator.render import checksum
from kvtrace_operator.render.labels import owner_labels
from kvtrace_operator.render.status import workload_summary

# Every kind the renderers may produce and the operator may therefore have to delete.
# PersistentVolumeClaims are deliberately absent: data is never deleted by a re-render
# (claims of a StatefulSet are not ours anyway; a pipeline's claim goes with the pipeline).
PRUNABLE_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
)


def child_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name): unique among one owner's children (all in the owner's namespace)."""
    return str(obj["kind"]), str(obj["metadata"]["name"])


def owned_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == owner_uid for ref in refs)


ChildKey = tuple[str, str]  # (kind, name)
WORKLOAD_KINDS = ("StatefulSet", "Deployment")


class Seen(NamedTuple):
    """What is known of one existing child without reading it again (no data, no spec):
    enough to tell whether it drifted, to report the change, and to delete it."""

    api_version: str
    kind: str
    name: str
    resource_version: str
    # Changes when someone writes what we apply, not when a controller writes the status.
    version: str
    workload: dict[str, Any] | None  # render.status.workload_summary() of a workload


class Applied(NamedTuple):
    """What the last apply of one child left: the checksum of its render, and its Seen.version."""

    render: str
    version: str


def seen(obj: Mapping[str, Any]) -> Seen:
    """The Seen of an object as the API server returned it (or a watch event carried it)."""
    meta = obj.get("metadata") or {}
    rv = str(meta.get("resourceVersion") or "")
    generation = meta.get("generation")
    version = (
        "g{}/{}".format(
            generation,
            checksum([meta.get("labels") or {}, meta.get("annotations") or {}])[:16],
        )
        if generation
        else f"rv{rv}"
    )
    workload = workload_summary(obj) if obj.get("kind") in WORKLOAD_KINDS else None
    return Seen(
        str(obj.get("apiVersion", "")), str(obj["kind"]), str(meta["name"]), rv, version, workload
    )


def generation_of(version: str) -> int | None:
    """The generation in a Seen.version (None for kinds without one: ``rv...``)."""
    return int(version[1:].partition("/")[0]) if version.startswith("g") else None


def drifted(obj: Mapping[str, Any], before: Seen | None, applied: Applied | None) -> bool:
    """Whether ``obj`` must be applied: missing (``before`` None), rendered differently from
    the last apply (``applied``: None when there was none), or changed by someone else since
    (its version is not the one that apply left). A generation older than the one that apply
    left is not a change: the watch has not caught up with it yet (a status refresh right
    after an update would otherwise apply the same spec again); nor is a new version of a
    generated Secret (a pipeline's token file rewritten for each new consumer was read again
    by every reconcile of the pipeline after it)."""
    if before is None or applied is None or applied.render != checksum(obj):
        return True
    if applied.version == before.version:
        return False
    if is_generated(obj):  # its data is written by the operator itself (a token, the token
        return False  # file), not by the apply: a new resourceVersion is no drift
    seen_generation, applied_generation = (
        generation_of(before.version),
        generation_of(applied.version),
    )
    return not (
        seen_generation is not None
        and applied_generation is not None
        and seen_generation < applied_generation
    )


def stale_children(
    existing: Mapping[ChildKey, Seen], rendered: Iterable[Mapping[str, Any]]
) -> list[Seen]:
    """The owner's existing children that the current render no longer contains."""
    keep = {child_key(obj) for obj in rendered}
    return [child for key, child in existing.items() if key not in keep]


@dataclasses.dataclass
class Changes:
    """What one apply pass did, as ``Kind/name`` strings (for events and logs); ``applied``:
    the objects written (as returned); ``workloads``: workload_summary() of every rendered
    workload (applied now or found unchanged); ``last``: what to pass as ``last`` next time."""

    created: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    applied: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    previous: dict[ChildKey, Seen] = dataclasses.field(default_factory=dict)
    workloads: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    last: dict[ChildKey, Applied] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def _label(obj: Mapping[str, Any]) -> str:
    kind, name = child_key(obj)
    return f"{kind}/{name}"


async def list_children(
    client: AsyncClient, owner: Mapping[str, Any], kinds: Sequence[tuple[str, str]] = PRUNABLE_KINDS
) -> list[dict[str, Any]]:
    """Every object of ``kinds`` in the owner's namespace owned by it: the API server selects
    them by the owner's labels (render.labels.owner_labels), so the work grows with the
    owner's children, not with the namespace; the owner UID check drops a namesake's."""
    namespace, owner_uid = owner["metadata"]["namespace"], owner["metadata"]["uid"]
    selector: dict[str, Any] = dict(owner_labels(owner))
    found = []
    for api_version, kind in kinds:
        res = resource_class(api_version, kind)
        async for item in client.list(res, namespace=namespace, labels=selector):
            obj = to_dict(item)
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            if owned_by(obj, owner_uid):
                found.append(obj)
    return found


async def existing_children(client: AsyncClient, owner: Mapping[str, Any]) -> dict[ChildKey, Seen]:
    """The owner's children as Seen, listed (when no watch keeps them)."""
    return {child_key(obj): seen(obj) for obj in await list_children(client, owner)}


class Recreating(Exception):
    """A child had to be deleted because a field we changed is immutable (a Deployment's
    selector, a StatefulSet's claim templates); the next reconcile creates it again."""


class Rejected(Exception):
    """The API server refused a rendered child as invalid (422), e.g. a pass-through field
    such as ``scheduling.affinity`` of the wrong shape: a spec problem, not a transient one."""


# Server-side apply reports an object that does not fit its schema (a string where a map
# belongs, a malformed quantity) as a 500 with one of these messages, not as a 422.
_SCHEMA_MISMATCH = ("failed to create typed patch object", "failed to convert new object")


def is_immutable_error(exc: ApiError) -> bool:
    return exc.status.code == 422 and "immutable" in (exc.status.message or "")


def is_invalid_error(exc: ApiError) -> bool:
    """The API server refused the object itself (retrying the same object cannot help)."""
    message = exc.status.message or ""
    if exc.status.code in (400, 422):
        return not is_immutable_error(exc)
    return exc.status.code == 500 and message.startswith(_SCHEMA_MISMATCH)


def _rejected(obj: Mapping[str, Any], exc: ApiError) -> Rejected:
    return Rejected(
        f"the API server rejected {obj['kind']}/{obj['metadata']['name']}: {exc.status.message}"
    )


async def dry_run(
    client: AsyncClient, rendered: Sequence[Mapping[str, Any]], namespace: str
) -> None:
    """Server-side dry-run apply of every child: raises Rejected before anything is written
    (a change of an immutable field is not a rejection: the real apply re-creates)."""
    for obj in rendered:
        res = resource_class(obj["apiVersion"], obj["kind"])
        try:
            await client.patch(
                res,
                obj["metadata"]["name"],
                dict(obj),
                namespace=namespace,
                patch_type=PatchType.APPLY,
                field_manager=FIELD_MANAGER,
                force=True,
                dry_run=True,
            )
        except ApiError as exc:
            if is_invalid_error(exc):
                raise _rejected(obj, exc) from exc
            if _role_not_there_yet(obj, exc):
                continue
            if not is_immutable_error(exc) and exc.status.code != 409:
                raise


def _role_not_there_yet(obj: Mapping[str, Any], exc: ApiError) -> bool:
    """A RoleBinding to a Role of the same render that does not exist yet: an operator
    without ``bind`` (the chart's) may bind only a Role whose rules it holds, which the API
    server checks by reading the Role, so the dry run answers 404 until the real apply has
    created the Role just before the binding (and checks the binding then)."""
    return obj["kind"] == "RoleBinding" and exc.status.code == 404


async def apply_object(
    client: AsyncClient, obj: Mapping[str, Any], namespace: str
) -> dict[str, Any]:
    """Server-side apply one object; we force ownership of the fields we set.

    When the API server refuses because a field is immutable, the object is deleted and
    Recreating raised (a StatefulSet orphans its pods, which the new one adopts, and keeps
    its volumes; a Deployment takes its pods with it)."""
    res = resource_class(obj["apiVersion"], obj["kind"])
    try:
        result = await client.patch(
            res,
            obj["metadata"]["name"],
            dict(obj),
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=FIELD_MANAGER,
            force=True,
        )
    except ApiError as exc:
        if is_invalid_error(exc):
            raise _rejected(obj, exc) from exc
        if not is_immutable_error(exc):
            raise
        cascade = CascadeType.ORPHAN if obj["kind"] == "StatefulSet" else CascadeType.BACKGROUND
        await delete_object(client, obj, namespace, cascade=cascade)
        raise Recreating(
            f"{obj['kind']}/{obj['metadata']['name']} deleted to be re-created: "
            f"{exc.status.message}"
        ) from exc
    applied = to_dict(result)
    applied.setdefault("apiVersion", obj["apiVersion"])
    applied.setdefault("kind", obj["kind"])
    return applied


async def delete_object(
    client: AsyncClient,
    obj: Mapping[str, Any],
    namespace: str,
    cascade: CascadeType = CascadeType.BACKGROUND,
) -> bool:
    """Delete; False when it was already gone."""
    res = resource_class(obj["apiVersion"], obj["kind"])
    try:
        await client.delete(res, obj["metadata"]["name"], namespace=namespace, cascade=cascade)
    except ApiError as exc:
        if exc.status.code == 404:
            return False
        raise
    return True


async def apply_children(
    client: AsyncClient,
    owner: Mapping[str, Any],
    rendered: Sequence[Mapping[str, Any]],
    *,
    observed: Mapping[ChildKey, Seen] | None = None,
    last: Mapping[ChildKey, Applied] | None = None,
    prune: bool = True,
    validate_first: bool = False,
    written: Mapping[ChildKey, Mapping[str, Any]] | None = None,
) -> Changes:
    """Apply the children of ``rendered`` that drifted (in order; all of them without
    ``last``) in the owner's namespace, then delete the owner's children that are not rendered
    any more. ``observed``: the owner's existing children (listed when None). ``written``:
    children the caller applied (or created) just before, as the API server returned them:
    taken as applied, not sent again. With
    ``validate_first``, a server-side dry run of every child comes first, so a child the API
    server rejects (Rejected) leaves nothing half-applied. Raises lightkube.ApiError on other
    failures (the caller retries; applies are idempotent)."""
    namespace = owner["metadata"]["namespace"]
    if validate_first:
        await dry_run(client, rendered, namespace)
    existing = dict(observed) if observed is not None else await existing_children(client, owner)
    changes = Changes(previous=existing)
    for obj in rendered:
        key = child_key(obj)
        before, previous = existing.get(key), (last or {}).get(key)
        if before is not None and previous is not None and not drifted(obj, before, previous):
            changes.last[key] = previous
            if before.workload is not None:
                changes.workloads.append(before.workload)
            continue
        if key in (written or {}):
            applied = dict((written or {})[key])
        elif is_generated(obj):  # created once with its random token, never re-applied
            applied, _ = await ensure_generated(client, obj, namespace)
        else:
            applied = await apply_object(client, obj, namespace)
        changes.applied.append(applied)
        after = seen(applied)
        changes.last[key] = Applied(checksum(obj), after.version)
        if after.workload is not None:
            changes.workloads.append(after.workload)
        if before is None:
            changes.created.append(_label(obj))
        elif before.resource_version != after.resource_version:
            changes.updated.append(_label(obj))
    if prune:
        for child in stale_children(existing, rendered):
            ref = {
                "apiVersion": child.api_version,
                "kind": child.kind,
                "metadata": {"name": child.name},
            }
            if await delete_object(client, ref, namespace):
                changes.deleted.append(f"{child.kind}/{child.name}")
    return changes
