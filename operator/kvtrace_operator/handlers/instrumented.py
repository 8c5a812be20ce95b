"""A TracingPipeline's injected workloads, from its reconcile (docs/injection.md): their CA
copies follow the pipeline's bundle, and the restart-on-change ones roll when the injected
configuration changed. Which workloads they are is derived like every consumer
(handlers/consumers.py: their Secrets, labelled with the pipeline by the injection webhook).
Imports no resource's handler module."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lightkube import AsyncClient

from kvtrace_operator import k8s
from kvtrace_operator.k8s import injection as k8s_injection
from kvtrace_operator.render import SpecError, injection
from kvtrace_operator.render import tls as tls_render
from kvtrace_operator.render.consumer_tokens import workload_secret_name
from kvtrace_operator.render.images import DEFAULT_IMAGES, Images
from kvtrace_operator.spec import parse_pipeline

log = logging.getLogger("kvtrace_operator")


async def sync(
    client: AsyncClient,
    pipeline: Mapping[str, Any],
    workloads: list[str],
    agents: Images = DEFAULT_IMAGES,
) -> None:
    """``workloads``: ``NAMESPACE/KIND/NAME`` of the workloads injected with ``pipeline``;
    ``agents``: the operator's agent images."""
    meta = pipeline["metadata"]
    settings = parse_pipeline(pipeline.get("spec")).security.tls
    ca = None
    if settings.enabled and workloads:  # nothing injected: no CA to read (a request each time)
        ca = await k8s_injection.read_ca(
            client, meta["namespace"], *tls_render.client_ca(settings, meta["name"])
        )
    for label in workloads:
        namespace, _, workload = label.partition("/")
        kind, _, name = workload.partition("/")
        if ca:
            secret = {
                "metadata": {"namespace": namespace, "name": workload_secret_name(kind, name)}
            }
            await k8s_injection.refresh_ca(client, secret, ca)
        await restart_if_changed(client, dict(pipeline), namespace, kind, name, agents)


async def restart_if_changed(
    client: AsyncClient,
    pipeline: dict[str, Any],
    namespace: str,
    kind: str,
    name: str,
    agents: Images = DEFAULT_IMAGES,
) -> None:
    """Roll a restart-on-change workload of ``pipeline`` whose pod template carries another
    configuration checksum than the current one (event InstrumentationChanged)."""
    if kind not in injection.RESTART_KINDS:
        return
    workload = await k8s_injection.get_workload(client, kind, namespace, name)
    if workload is None:
        return
    template = (workload.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if annotations.get(injection.RESTART_ON_CHANGE) != "true":
        return
    try:
        request = injection.parse_request(annotations, namespace)
    except SpecError:
        return  # its pods report it
    ref = f"{pipeline['metadata']['namespace']}/{pipeline['metadata']['name']}"
    if request is None or request.ref != ref:
        return
    wanted = injection.config_checksum(pipeline, request, agents)
    if annotations.get(injection.RESTART_CHECKSUM) == wanted:
        return
    workload.setdefault("apiVersion", k8s_injection.WORKLOAD_API_VERSIONS[kind])
    workload.setdefault("kind", kind)
    await k8s_injection.roll(client, workload, wanted)
    log.info(
        "%s %s/%s: the injected configuration of %s changed; rolling its pods",
        kind,
        namespace,
        name,
        ref,
    )
    await k8s.post_event(
        client,
        workload,
        "InstrumentationChanged",
        f"the injected configuration of TracingPipeline {ref} changed: rolling the pods",
    )
