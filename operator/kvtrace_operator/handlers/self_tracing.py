"""Where the operator's own spans go (kvtrace_operator.tracing): after each reconcile of the
TracingPipeline named by ``--trace-pipeline``, the exporter follows that pipeline's collector
address, bearer token and CA (read like the canary reads them). Nothing happens when the
operator traces nothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient

from kvtrace.shared.endpoints import resolve_url
from kvtrace_operator import tracing
from kvtrace_operator.handlers import canary
from kvtrace_operator.render import names
from kvtrace_operator.spec import parse_pipeline

log = logging.getLogger("kvtrace_operator")


async def follow(client: AsyncClient, pipeline: Mapping[str, Any]) -> None:
    """Point the operator's span exporter at ``pipeline`` when it is the traced one."""
    meta = pipeline["metadata"]
    if tracing.target() != (meta["namespace"], meta["name"]):
        return
    spec = parse_pipeline(pipeline.get("spec"))
    try:
        token, ca = await canary.credentials(client, pipeline, spec)
    except canary.CredentialsError as exc:
        log.warning(
            "operator spans cannot go to TracingPipeline %s/%s: %s",
            meta["namespace"],
            meta["name"],
            exc,
        )
        return
    url = resolve_url(names.pipeline_endpoints(dict(pipeline))["otlpHttp"])
    tracing.export_to(url, token=token, ca_pem=ca)
