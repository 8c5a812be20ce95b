"""The TLS Secrets of a pipeline or a KVCluster before its workloads (k8s/certificates.py does the work): an
event per change, naming Secrets and reasons only, never key material, and ``status.tls``
(the trusted CAs and each server certificate with its ``notAfter``).

A render the API server has not accepted yet is checked first (validate_changed): the
operator's permissions for every kind it changed, then a dry run of the children carrying
the spec's unchecked values (render/dry_run.py: the workloads and claims; the others are
valid by construction), the reconcile's only dry run (what is applied later is this render
with the TLS Secrets and Secret versions added). So an invalid spec, or a missing
permission, writes no TLS Secret, nor anything else (nothing half-applied). Without the
Certificates: they need cert-manager's CRD, which k8s/certificates.py checks and reports as
a spec error."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from kvtrace_operator import k8s
from kvtrace_operator.handlers.runtime import Runtime
from kvtrace_operator.k8s import certificates
from kvtrace_operator.k8s.apply import dry_run
from kvtrace_operator.render import checksum
from kvtrace_operator.render.certificates import KIND as CERTIFICATE
from kvtrace_operator.render.dry_run import checked_children

log = logging.getLogger("kvtrace_operator")


async def validate_changed(
    runtime: Runtime, owner: Mapping[str, Any], children: list[dict[str, Any]]
) -> None:
    """Before anything of a render the API server has not accepted yet is written (all of it
    the first time; after an update, the children it changed): check that the operator may
    write every kind it changed (k8s.Permissions: a refusal half-way would leave it
    half-applied; the ApiError 403 is raised first), then dry-run those carrying the spec's
    unchecked values (render/dry_run.py): k8s.Rejected. The unchanged children were accepted
    as they are and are not applied again; cert-manager's Certificates wait for its CRD
    (k8s/certificates.py)."""
    meta = owner["metadata"]
    children = [child for child in children if child["kind"] != CERTIFICATE]
    rendered = {k8s.child_key(obj): checksum(obj) for obj in children}
    accepted = runtime.validated.get(meta["uid"]) or {}
    changed = [
        obj for obj in children if accepted.get(k8s.child_key(obj)) != rendered[k8s.child_key(obj)]
    ]
    if changed:
        await runtime.permissions.check(meta["namespace"], k8s.needed(changed))
        checked = checked_children(changed)
        if checked:
            await dry_run(runtime.client, checked, meta["namespace"])
    runtime.validated[meta["uid"]] = rendered


class Prepared(NamedTuple):
    """What prepare() hands the reconcile: the children with the TLS objects first, the ones
    written now as the API server returned them (the apply takes them as applied), and the
    ``status.tls`` to write with the rest of the status (None removes it)."""

    children: list[dict[str, Any]]
    written: dict[k8s.ChildKey, dict[str, Any]]
    tls: dict[str, Any] | None


async def prepare(
    runtime: Runtime, pipeline: Mapping[str, Any], children: list[dict[str, Any]]
) -> Prepared:
    """Create or renew the managed CA and leaves (or apply cert-manager's Certificates and the
    trust bundle), with an event ``CertificatesRenewed`` naming what changed (not for a new
    owner: its ``Created`` event names the Secrets). Raises SpecError (certManager without
    cert-manager) and k8s.Rejected (a child the API server refuses: then nothing was
    written)."""
    client, meta = runtime.client, pipeline["metadata"]
    await validate_changed(runtime, pipeline, children)
    # The owner's Certificates are pruned (a LIST) when the rendered set changed, or first;
    # not for a new owner (no status yet: never reconciled) that renders none.
    kept = certificates.certificate_names(dict(pipeline))
    known = runtime.certificates_kept.get(meta["uid"])
    prune = known != kept and not (known is None and not kept and not pipeline.get("status"))
    prepared = await certificates.prepare(runtime.secret_data, dict(pipeline), prune=prune)
    runtime.certificates_kept[meta["uid"]] = kept
    if prepared.actions:
        message = "; ".join(prepared.actions)
        log.info(
            "TLS of %s %s/%s: %s",
            pipeline.get("kind", "TracingPipeline"),
            meta["namespace"],
            meta["name"],
            message,
        )
        if not certificates.first_tls(pipeline):
            await k8s.post_event(client, pipeline, "CertificatesRenewed", message)
    return Prepared([*prepared.objects, *children], prepared.written, prepared.status)
