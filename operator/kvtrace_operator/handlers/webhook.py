"""The injection webhook (docs/injection.md): kopf's admission server with a certificate of the
operator's own CA, the MutatingWebhookConfiguration it applies at start (render/webhook.py),
and the two mutating handlers calling render/injection.py:

- pods on CREATE: the pod asking for ``kvtrace.dev/inject`` gets its pipeline's configuration,
  after its workload's Secret (token, CA copy) exists; a pod that cannot be injected (missing or
  invalid pipeline, malformed annotation) is created unchanged but for the annotation
  ``kvtrace.dev/injection-error``, with a Warning event ``InjectionFailed`` on its workload;
- workloads on CREATE/UPDATE: ``restart-on-change`` pod templates get the checksum of their
  injected configuration, so a later change of it (handlers/instrumented.py) rolls them.

A failure inside a handler never blocks a pod (``failurePolicy: Ignore``, and the handlers
catch what they can name). The workloads' Secrets are a source of their pipeline's consumers
(handlers/consumers.py); a change of one asks for a reconcile of its pipeline, which brings
the token set, the CA copies and restart-on-change workloads in step (handlers/instrumented.py).
Imports no other resource's handler module.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import kopf
from lightkube import AsyncClient

from kvtrace.shared.api import PIPELINE
from kvtrace_operator import k8s, pki
from kvtrace_operator.handlers import common
from kvtrace_operator.handlers.runtime import Options, Runtime
from kvtrace_operator.k8s import injection as k8s_injection
from kvtrace_operator.render import SpecError, injection, validate_pipeline
from kvtrace_operator.render import tls as tls_render
from kvtrace_operator.render import webhook as webhook_render
from kvtrace_operator.render.images import DEFAULT_IMAGES, Images
from kvtrace_operator.render.security import auth, tls
from kvtrace_operator.render.status import find_condition
from kvtrace_operator.spec import parse_pipeline

log = logging.getLogger("kvtrace_operator")
CA_VALIDITY = datetime.timedelta(days=365)
EVENT_INTERVAL = 60.0  # one InjectionFailed event per workload and message this often


@dataclasses.dataclass(frozen=True)
class Serving:
    """Where the admission server listens and how the API server reaches it."""

    port: int
    host: str = "127.0.0.1"  # URL mode: https://HOST:PORT/...
    service: tuple[str, str] | None = None  # service mode: (namespace, name), port 443

    def dns_names(self) -> list[str]:
        if self.service is None:
            return [] if _is_ip(self.host) else [self.host]
        namespace, name = self.service
        return [
            name,
            f"{name}.{namespace}",
            f"{name}.{namespace}.svc",
            f"{name}.{namespace}.svc.cluster.local",
        ]

    def client_config(self, ca_pem: str) -> dict[str, Any]:
        bundle = base64.b64encode(ca_pem.encode()).decode()
        if self.service is not None:
            namespace, name = self.service
            return {
                "service": {"namespace": namespace, "name": name, "port": 443},
                "caBundle": bundle,
            }
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {"url": f"https://{host}:{self.port}", "caBundle": bundle}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def server(serving: Serving, directory: Path | None = None) -> tuple[kopf.WebhookServer, str]:
    """kopf's admission server with a fresh CA of the operator's and a leaf for the address
    the API server uses; the CA's PEM (the configuration's caBundle). Private keys stay in a
    private temporary directory of this process."""
    now = datetime.datetime.now(datetime.UTC)
    ca = pki.make_ca("kvtrace-operator webhook CA", now, CA_VALIDITY)
    names = serving.dns_names()
    ips = (serving.host,) if serving.service is None and _is_ip(serving.host) else ()
    leaf = pki.issue(
        ca, names[0] if names else serving.host, names, now, CA_VALIDITY, ip_addresses=ips
    )
    folder = directory or Path(tempfile.mkdtemp(prefix="kvtrace-webhook-"))
    os.chmod(folder, 0o700)
    for filename, text in (
        ("ca.crt", ca.cert_pem),
        ("tls.crt", leaf.cert_pem),
        ("tls.key", leaf.key_pem),
    ):
        path = folder / filename
        path.write_text(text)
        path.chmod(0o600)
    listen = "0.0.0.0" if serving.service is not None else serving.host  # noqa: S104 - the Service's pods
    return kopf.WebhookServer(
        addr=listen,
        port=serving.port,
        certfile=str(folder / "tls.crt"),
        pkeyfile=str(folder / "tls.key"),
        cafile=str(folder / "ca.crt"),
    ), ca.cert_pem


async def install(client: AsyncClient, serving: Serving, ca_pem: str, namespaces: list[str]) -> str:
    """Apply the MutatingWebhookConfiguration; its name."""
    configuration = webhook_render.webhook_configuration(
        serving.client_config(ca_pem), namespaces, os.environ.get("POD_NAMESPACE")
    )
    await k8s_injection.apply_configuration(client, configuration)
    log.info(
        "injection webhook registered: MutatingWebhookConfiguration %s",
        configuration["metadata"]["name"],
    )
    return str(configuration["metadata"]["name"])


# ---- admission ------------------------------------------------------------------------------


async def usable_pipeline(
    client: AsyncClient, request: injection.Request
) -> tuple[dict[str, Any] | None, str]:
    """The pipeline a request names when it can be injected, else None and why not."""
    pipeline = await k8s.get_object(
        client, k8s.TracingPipeline, request.pipeline, request.namespace
    )
    if pipeline is None:
        return None, f"TracingPipeline {request.ref} not found"
    try:
        validate_pipeline(pipeline)
    except SpecError as exc:
        return None, f"TracingPipeline {request.ref} is invalid: {exc}"
    valid = find_condition(pipeline.get("status"), "ConfigValid") or {}
    if valid.get("status") == "False":
        return None, f"TracingPipeline {request.ref} is invalid: {valid.get('message', '')}"
    return pipeline, ""


async def ensure_secret(
    client: AsyncClient, pod: dict[str, Any], request: injection.Request, pipeline: dict[str, Any]
) -> str:
    """Create (or complete) the pod's workload Secret; an empty string, or why it cannot be."""
    spec = parse_pipeline(pipeline.get("spec"))
    namespace = pod["metadata"]["namespace"]
    ca = None
    if (settings := tls(spec)) is not None:
        secret, key = tls_render.client_ca(settings, request.pipeline)
        ca = await k8s_injection.read_ca(client, request.namespace, secret, key)
        if not ca:
            return f"the CA bundle of TracingPipeline {request.ref} (Secret {secret}, key {key}) does not exist yet"
    owner = await k8s_injection.workload_owner(client, pod)
    obj = injection.workload_secret(namespace, injection.owning_workload(pod), request, owner)
    await k8s_injection.ensure_workload_secret(client, obj, token=auth(spec) is not None, ca=ca)
    return ""


async def report(runtime: Runtime, pod: dict[str, Any], message: str) -> None:
    """A Warning event InjectionFailed on the pod's workload (at most once a minute per
    workload and message; a bare pod only gets the annotation)."""
    client = runtime.client
    owner = await k8s_injection.workload_owner(client, pod)
    log.warning(
        "pod of %s in %s not injected: %s",
        (owner or {}).get("name", "a bare pod"),
        pod["metadata"].get("namespace"),
        message,
    )
    if owner is None:
        return
    recent = runtime.injection_events
    key = (owner["uid"], message)
    if time.monotonic() - recent.get(key, -EVENT_INTERVAL) < EVENT_INTERVAL:
        return
    if len(recent) > 1000:
        recent.clear()
    recent[key] = time.monotonic()
    involved = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "metadata": {
            "name": owner["name"],
            "namespace": pod["metadata"]["namespace"],
            "uid": owner["uid"],
        },
    }
    await k8s.post_event(
        client, involved, "InjectionFailed", f"pods not injected: {message}", "Warning"
    )


def set_patch(patch: kopf.Patch, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Merge-patch ``patch`` so that ``before`` becomes ``after`` (spec lists and annotations)."""
    for key in ("containers", "initContainers", "volumes"):
        if after["spec"].get(key) != before["spec"].get(key):
            patch.setdefault("spec", {})[key] = after["spec"][key]
    patch.setdefault("metadata", {})["annotations"] = after["metadata"]["annotations"]


async def admit_pod(runtime: Runtime, pod: dict[str, Any], dryrun: bool) -> dict[str, Any]:
    """The pod as it should be created (unchanged when it asks for nothing)."""
    client = runtime.client
    namespace = pod["metadata"].get("namespace") or ""
    try:
        request = injection.parse_request(pod["metadata"].get("annotations"), namespace)
    except SpecError as exc:
        await report(runtime, pod, str(exc))
        return injection.refused(pod, str(exc))
    if request is None:
        return pod
    pipeline, why = await usable_pipeline(client, request)
    if pipeline is not None and not dryrun:
        why = await ensure_secret(client, pod, request, pipeline)
    if pipeline is None or why:
        await report(runtime, pod, why)
        return injection.refused(pod, why)
    return injection.inject(pod, pipeline, request, runtime.options.images)


async def admit_workload(
    client: AsyncClient, workload: dict[str, Any], agents: Images = DEFAULT_IMAGES
) -> str | None:
    """The restart checksum a restart-on-change workload's template should carry, if any
    (``agents``: the operator's agent images)."""
    template = (workload.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if annotations.get(injection.RESTART_ON_CHANGE) != "true":
        return None
    try:
        request = injection.parse_request(annotations, workload["metadata"].get("namespace") or "")
    except SpecError:
        return None  # its pods report it
    if request is None:
        return None
    pipeline, _ = await usable_pipeline(client, request)
    return None if pipeline is None else injection.config_checksum(pipeline, request, agents)


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    """The Secret watch always (workload Secrets of an earlier run still count); the admission
    handlers only when the webhook is served (kopf refuses them without a server)."""

    @kopf.on.event(
        "",
        "v1",
        "secrets",
        id="workload-secret",
        labels={injection.PIPELINE_LABEL: kopf.PRESENT},
        registry=registry,
    )
    async def workload_secret(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """An injected workload's Secret created, changed or deleted (with its workload): its
        pipeline's token set and status follow."""
        labels = body["metadata"].get("labels") or {}
        namespace, name = (
            labels.get(injection.PIPELINE_NAMESPACE_LABEL),
            labels.get(injection.PIPELINE_LABEL),
        )
        if type is not None and namespace and name:
            memo.runtime.request(PIPELINE, namespace, name)

    if not options.webhook:
        return

    @kopf.on.mutate(
        "",
        "v1",
        "pods",
        id=webhook_render.POD_HANDLER,
        operations=["CREATE"],
        ignore_failures=True,
        side_effects=True,
        registry=registry,
    )
    async def inject_pod(
        body: kopf.Body, patch: kopf.Patch, dryrun: bool, memo: kopf.Memo, **_: Any
    ) -> None:
        pod = common.plain(body)
        try:
            after = await admit_pod(memo.runtime, pod, dryrun)
        except Exception as exc:
            log.exception("injection of a pod in %s failed", pod["metadata"].get("namespace"))
            after = injection.refused(pod, f"the operator failed to inject it: {exc}")
        set_patch(patch, pod, after)

    async def stamp_workload(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        runtime = memo.runtime
        checksum = await admit_workload(runtime.client, common.plain(body), runtime.options.images)
        if checksum is not None:
            patch.setdefault("spec", {})["template"] = {
                "metadata": {"annotations": {injection.RESTART_CHECKSUM: checksum}}
            }

    # One mutating handler for the workload kinds whose pod templates restart on change.
    for plural in ("deployments", "statefulsets", "daemonsets"):
        kopf.on.mutate(
            "apps",
            "v1",
            plural,
            id=webhook_render.WORKLOAD_HANDLER,
            operations=["CREATE", "UPDATE"],
            ignore_failures=True,
            registry=registry,
        )(stamp_workload)
