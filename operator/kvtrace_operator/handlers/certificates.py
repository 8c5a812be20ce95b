"""The pipeline's TLS Secrets before its workloads (k8s/certificates.py does the work): an
event per change, naming Secrets and reasons only, never key material, and ``status.tls``
(the trusted CAs and each server certificate with its ``notAfter``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient

from kvtrace_operator import k8s
from kvtrace_operator.k8s import certificates

log = logging.getLogger("kvtrace_operator")


async def prepare(client: AsyncClient, pipeline: Mapping[str, Any], children: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Create or renew the managed CA and leaves (or apply cert-manager's Certificates and the
    trust bundle), then ``children`` with those objects first, so the apply keeps them.
    Raises SpecError (certManager without cert-manager)."""
    prepared = await certificates.prepare(client, dict(pipeline))
    meta = pipeline["metadata"]
    if prepared.actions:
        message = "; ".join(prepared.actions)
        log.info("TLS of TracingPipeline %s/%s: %s", meta["namespace"], meta["name"], message)
        await k8s.post_event(client, pipeline, "CertificatesRenewed", message)
    if (pipeline.get("status") or {}).get("tls") != prepared.status:
        # Its own key of the status (None removes it): the rest of the status is the reconcile's.
        await k8s.patch_status(client, k8s.TracingPipeline, meta["name"], meta["namespace"],
                               {"tls": prepared.status})
    return [*prepared.objects, *children]
