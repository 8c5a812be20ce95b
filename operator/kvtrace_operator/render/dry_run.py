"""Which rendered children the API server must check (a server-side dry run) before a
reconcile writes anything, and why the others need not be.

Workloads and claims (``CHECKED_KINDS``) carry values the operator copies from the spec
without being able to check them as the API server does: ``resources``, ``affinity``,
``tolerations``, ``topologySpreadConstraints``, ``nodeSelector``, ``priorityClassName``,
images, storage classes and sizes. Every other child is built by the operator from checked
values only (names render/validate.py checked, enums, bounded integers, fixed ports and
rules) plus data the API server does not interpret (ConfigMap and Secret values): valid by
construction. Two tests hold that: tests/operator/unit/test_render_dry_run.py (a spec's
free-form values reach only the checked kinds) and
tests/operator/controlplane/test_render_accepted.py (the API server accepts every other child
of the examples and of edge specs). One dry run of the checked children per changed render
then keeps the guarantee that an invalid spec writes nothing, for ~1 request per owner
instead of one per child.

Pure: imports nothing but the standard library."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CHECKED_KINDS = frozenset({"StatefulSet", "Deployment", "PersistentVolumeClaim"})


def needs_dry_run(obj: Mapping[str, Any]) -> bool:
    """Whether the API server must check ``obj`` before anything of its render is written."""
    return obj.get("kind") in CHECKED_KINDS


def checked_children(children: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The children of a render that carry the spec's unchecked values, in render order."""
    return [obj for obj in children if needs_dry_run(obj)]
