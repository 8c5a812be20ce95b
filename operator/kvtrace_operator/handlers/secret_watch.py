"""Secrets the workloads use, and refused requests.

- Before applying, a reconcile reads every Secret its rendered workloads reference
  (resourceVersion and key names only): a missing Secret or key stops the apply (the pods
  would fail with CreateContainerConfigError) and sets ``SecretsReady=False`` with an event;
  otherwise the resourceVersions go into the pod-template checksums, so a changed Secret rolls
  the pods that read it only at start.
- Secrets are watched: a change of one that a pipeline (or its consumers' pods) references
  reconciles that pipeline and its KVClusters at once, not on the resync timer. An index
  maps (namespace, Secret) to the pipelines referencing it.
- A request the API server refuses with 403 sets ``Authorized=False`` (reason Forbidden,
  naming the verb and resource) and an event; the operator keeps running and the next
  reconcile heals it once the permission is back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from typing import Any

import kopf
from lightkube import ApiError, AsyncClient

from kvtrace_operator import k8s
from kvtrace_operator.handlers import common
from kvtrace_operator.render.names import GROUP, VERSION
from kvtrace_operator.render.secret_refs import (
    SECRETS_READY,
    SecretRef,
    missing_secrets,
    pipeline_secret_names,
    referenced_secrets,
    roll_on_secret_changes,
    secrets_condition,
    with_conditions,
)
from kvtrace_operator.render.status import condition, find_condition

INDEX = "pipelines_by_secret"
AUTHORIZED = "Authorized"
log = logging.getLogger("kvtrace_operator")


@dataclasses.dataclass
class Gate:
    """What a reconcile learned about its Secrets: the children to apply (checksums extended
    by the Secrets' versions), the references, and what is missing."""

    children: list[dict[str, Any]]
    refs: list[SecretRef]
    problems: list[str]
    waiting: list[str] = dataclasses.field(default_factory=list)  # Secrets the operator makes

    @property
    def blocked(self) -> bool:
        return bool(self.problems or self.waiting)

    def conditions(self, owner: Mapping[str, Any]) -> list[dict[str, Any]]:
        generation, now = owner["metadata"].get("generation"), common.now()
        return [secrets_condition(self.refs, self.problems, generation=generation, now=now, waiting=self.waiting),
                condition(AUTHORIZED, True, "Allowed", "every request of the last reconcile was allowed",
                          generation=generation, now=now)]

    def status(self, owner: Mapping[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        return with_conditions(status, owner.get("status"), self.conditions(owner))


async def check(client: AsyncClient, owner: Mapping[str, Any], children: list[dict[str, Any]],
                pending: Collection[str] = ()) -> Gate:
    """``pending``: Secrets the operator itself is about to create (a missing one is waited
    for, without a warning)."""
    namespace = owner["metadata"]["namespace"]
    refs = referenced_secrets(children)
    found = await k8s.read_secrets(client, namespace, {ref.name for ref in refs})
    waiting = [message.replace("does not exist", "is not created") for message in
               missing_secrets([ref for ref in refs if ref.name in pending], found, namespace)]
    problems = missing_secrets([ref for ref in refs if ref.name not in pending], found, namespace)
    return Gate(roll_on_secret_changes(children, found), refs, problems, waiting)


async def report_missing(client: AsyncClient, owner: Mapping[str, Any], gate: Gate) -> None:
    """A Warning event SecretNotFound, once per distinct set of missing Secrets (none while
    only Secrets the operator makes are awaited)."""
    if not gate.problems:
        return
    message = secrets_condition(gate.refs, gate.problems, generation=None, now="")["message"]
    before = find_condition(owner.get("status"), SECRETS_READY) or {}
    if before.get("status") == "False" and before.get("message") == message:
        return
    meta = owner["metadata"]
    log.warning("%s %s/%s: %s", owner["kind"], meta["namespace"], meta["name"], message)
    await k8s.post_event(client, owner, "SecretNotFound", message, "Warning")


async def report_forbidden(client: AsyncClient, res: Any, owner: Mapping[str, Any], exc: ApiError) -> None:
    """Authorized=False with the refused verb and resource (the rest of the status stays),
    and a Warning event once per distinct refusal."""
    message = k8s.forbidden_message(exc)
    meta = owner["metadata"]
    before = find_condition(owner.get("status"), AUTHORIZED) or {}
    cond = condition(AUTHORIZED, False, "Forbidden", message, generation=meta.get("generation"), now=common.now())
    log.warning("%s %s/%s: %s", owner["kind"], meta["namespace"], meta["name"], message)
    try:
        status = with_conditions(owner.get("status") or {}, owner.get("status"), [cond])
        await k8s.patch_status(client, res, meta["name"], meta["namespace"], status)
    except ApiError as second:  # the status itself may be what is forbidden: the log says it
        log.warning("could not write the status of %s %s/%s: %s", owner["kind"], meta["namespace"],
                    meta["name"], k8s.forbidden_message(second) if k8s.is_forbidden(second) else second)
    if not (before.get("status") == "False" and before.get("message") == message):
        await k8s.post_event(client, owner, "Forbidden", message, "Warning")


def pipelines_using(index: Mapping[Any, Any] | None, namespace: str, secret: str) -> list[str]:
    return sorted(set((index or {}).get((namespace, secret), ())))


def register(registry: kopf.OperatorRegistry, options: common.Options) -> None:
    from kvtrace_operator.handlers import kvcluster, pipeline  # they import this module

    @kopf.index(GROUP, VERSION, pipeline.PLURAL, id=INDEX, registry=registry)
    def pipelines_by_secret(namespace: str | None, name: str, body: kopf.Body, **_: Any
                            ) -> dict[tuple[str, str], str] | None:
        secrets = pipeline_secret_names(common.plain(body))
        return {(namespace or "", secret): name for secret in sorted(secrets)} or None

    def referenced(namespace: str | None, name: str, **kwargs: Any) -> bool:
        """Only Secrets a pipeline uses reach the handler (kopf passes the indices here too)."""
        return bool(pipelines_using(kwargs.get(INDEX), namespace or "", name))

    @kopf.on.event("", "v1", "secrets", id="referenced-secret", when=referenced, registry=registry)
    async def secret_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        if type is None:  # the initial listing: resuming reconciles every resource anyway
            return
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        for owner in pipelines_using(kwargs.get(INDEX), namespace, name):
            log.info("Secret %s/%s %s: reconciling TracingPipeline %s and its KVClusters",
                     namespace, name, type.lower(), owner)
            consumers = kvcluster.consumers(kwargs.get(kvcluster.INDEX), namespace, owner)
            await pipeline.reconcile_named(memo.client, namespace, owner, consumers)
            await pipeline.rerender_consumers(memo.client, namespace, consumers)
