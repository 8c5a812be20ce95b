"""The TLS Secrets of a pipeline or a KVCluster before its workloads (k8s/certificates.py does the work): an
event per change, naming Secrets and reasons only, never key material, and ``status.tls``
(the trusted CAs and each server certificate with its ``notAfter``).

The children of a render the API server has not accepted yet are dry-run first (the
reconcile's only dry run, of the children it changed: what is applied later is this render
with the TLS Secrets and Secret versions added), so an invalid spec writes no TLS Secret, nor
anything else (nothing half-applied). Without the Certificates: they need cert-manager's
CRD, which k8s/certificates.py checks and reports as a spec error."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kvtrace_operator import k8s
from kvtrace_operator.handlers.runtime import Runtime
from kvtrace_operator.k8s import certificates
from kvtrace_operator.k8s.apply import dry_run
from kvtrace_operator.render import checksum
from kvtrace_operator.render.certificates import KIND as CERTIFICATE

log = logging.getLogger("kvtrace_operator")


async def validate_changed(
    runtime: Runtime, owner: Mapping[str, Any], children: list[dict[str, Any]]
) -> None:
    """Dry-run the children whose render the API server has not accepted yet (all of them
    the first time; after an update, those it changed): k8s.Rejected before anything is
    written. The unchanged ones were accepted as they are and are not applied again."""
    meta = owner["metadata"]
    workloads = [child for child in children if child["kind"] != CERTIFICATE]
    rendered = {k8s.child_key(obj): checksum(obj) for obj in workloads}
    accepted = runtime.validated.get(meta["uid"]) or {}
    changed = [
        obj for obj in workloads if accepted.get(k8s.child_key(obj)) != rendered[k8s.child_key(obj)]
    ]
    if changed:
        await dry_run(runtime.client, changed, meta["namespace"])
    runtime.validated[meta["uid"]] = rendered


async def prepare(
    runtime: Runtime, pipeline: Mapping[str, Any], children: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[k8s.ChildKey, dict[str, Any]]]:
    """Create or renew the managed CA and leaves (or apply cert-manager's Certificates and the
    trust bundle), then ``children`` with those objects first, so the apply keeps them, and
    the ones written now as the API server returned them (the apply takes them as applied).
    Raises SpecError (certManager without cert-manager) and k8s.Rejected (a child the API
    server refuses: then nothing was written)."""
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
        await k8s.post_event(client, pipeline, "CertificatesRenewed", message)
    if (pipeline.get("status") or {}).get("tls") != prepared.status:
        # Its own key of the status (None removes it): the rest of the status is the reconcile's.
        resource = k8s.KVCluster if pipeline.get("kind") == "KVCluster" else k8s.TracingPipeline
        await k8s.patch_status(
            client, resource, meta["name"], meta["namespace"], {"tls": prepared.status}
        )
    return [*prepared.objects, *children], prepared.written
