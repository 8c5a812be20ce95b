"""Secrets the workloads use, the collector's token set, and refused requests: what a
KVCluster's or TracingPipeline's reconcile calls (the Secret watch is handlers/secret_watch.py).

- Before applying, a reconcile reads every Secret its rendered workloads reference
  (resourceVersion and key names only): a missing Secret or key stops the apply (the pods
  would fail with CreateContainerConfigError) and sets ``SecretsReady=False`` with an event;
  otherwise the resourceVersions go into the pod-template checksums, so a changed Secret rolls
  the pods that read it only at start.
- Consumer tokens (render/consumer_tokens.py): after applying, a pipeline's reconcile reads
  the token of each of its consumers (derived from their sources at that moment, see
  handlers/consumers.py) and rewrites the collector's token-set Secret when the set changed (a
  KVCluster gone or no longer referencing the pipeline: its token is revoked); ``TokensReady``
  says which consumers the collector accepts and which have no usable token.
- A request the API server refuses with 403 sets ``Authorized=False`` (reason Forbidden,
  naming the verb and resource) and an event; the operator keeps running and the next
  reconcile heals it once the permission is back.

Imports no handler module but common and runtime.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from lightkube import ApiError, AsyncClient

from kvtrace_operator import k8s
from kvtrace_operator.handlers import common
from kvtrace_operator.handlers.runtime import Runtime
from kvtrace_operator.k8s.secrets import ensure_generated, is_generated
from kvtrace_operator.render import consumer_tokens, security
from kvtrace_operator.render.secret_refs import (
    SECRETS_READY,
    Found,
    SecretRef,
    missing_secrets,
    referenced_secrets,
    roll_on_secret_changes,
    secrets_condition,
    with_conditions,
    workload_secret_refs,
)
from kvtrace_operator.render.status import condition, find_condition
from kvtrace_operator.spec import parse_pipeline

TOKENS_READY = "TokensReady"
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
    # the generated Secrets created now (without data): the apply takes them as applied
    written: dict[k8s.ChildKey, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return bool(self.problems or self.waiting)

    def conditions(self, owner: Mapping[str, Any]) -> list[dict[str, Any]]:
        generation, now = owner["metadata"].get("generation"), common.now()
        return [
            secrets_condition(
                self.refs, self.problems, generation=generation, now=now, waiting=self.waiting
            ),
            condition(
                AUTHORIZED,
                True,
                "Allowed",
                "every request of the last reconcile was allowed",
                generation=generation,
                now=now,
            ),
        ]

    def status(self, owner: Mapping[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        return with_conditions(status, owner.get("status"), self.conditions(owner))


async def check(
    runtime: Runtime,
    owner: Mapping[str, Any],
    children: list[dict[str, Any]],
    pending: Collection[str] = (),
) -> Gate:
    """``pending``: Secrets the operator itself is about to create (a missing one is waited
    for, without a warning). The Secrets' versions come from the Secret watch's index when
    it has them (Runtime.secret_seen), else they are read."""
    client, namespace = runtime.client, owner["metadata"]["namespace"]

    def known(name: str) -> Found | None:
        """As the Secret watch saw it last, else as this operator wrote it (not seen yet)."""
        return runtime.secret_seen(namespace, name) or runtime.secret_data.found(namespace, name)

    written = await create_generated_first(runtime, children, namespace, known)
    refs = referenced_secrets(children)
    used = {ref.name for obj in children for ref in workload_secret_refs(obj)}
    found = await k8s.read_secrets(client, namespace, used, known)
    waiting = [
        message.replace("does not exist", "is not created")
        for message in missing_secrets(
            [ref for ref in refs if ref.name in pending], found, namespace
        )
    ]
    problems = missing_secrets([ref for ref in refs if ref.name not in pending], found, namespace)
    return Gate(roll_on_secret_changes(children, found), refs, problems, waiting, written)


async def create_generated_first(
    runtime: Runtime,
    children: list[dict[str, Any]],
    namespace: str,
    known: Callable[[str], Found | None],
) -> dict[k8s.ChildKey, dict[str, Any]]:
    """Create the owner's missing generated Secrets (a KVCluster's token) before the rest, so
    their versions are in the pod-template checksums from the first apply on: a changed one
    then rolls the pods that read it, and a new cluster's members do not restart once it
    exists. The render was dry-run before (handlers/certificates.py): an invalid one never
    gets here and leaves nothing behind. Returns them as the API server did (without data)."""
    # the ones the operator does not know: created at once when the Secret watch has not seen
    # them either (ensure_generated reads one only if it exists after all), else read first
    missing = [
        obj for obj in children if is_generated(obj) and known(obj["metadata"]["name"]) is None
    ]
    written = {}
    with k8s.request_priority(k8s.FIRST):  # the pipeline's token file waits for these
        for obj in missing:
            written[k8s.child_key(obj)], _ = await ensure_generated(
                runtime.client,
                obj,
                namespace,
                keep=runtime.secret_data,
                absent=runtime.secret_data.unseen(namespace, obj["metadata"]["name"]),
            )
    return written


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


async def report_forbidden(
    client: AsyncClient, res: Any, owner: Mapping[str, Any], exc: ApiError
) -> None:
    """Authorized=False with the refused verb and resource (the rest of the status stays),
    and a Warning event once per distinct refusal."""
    message = k8s.forbidden_message(exc)
    meta = owner["metadata"]
    before = find_condition(owner.get("status"), AUTHORIZED) or {}
    cond = condition(
        AUTHORIZED, False, "Forbidden", message, generation=meta.get("generation"), now=common.now()
    )
    log.warning("%s %s/%s: %s", owner["kind"], meta["namespace"], meta["name"], message)
    try:
        status = with_conditions(owner.get("status") or {}, owner.get("status"), [cond])
        await k8s.patch_status(client, res, meta["name"], meta["namespace"], status)
    except ApiError as second:  # the status itself may be what is forbidden: the log says it
        log.warning(
            "could not write the status of %s %s/%s: %s",
            owner["kind"],
            meta["namespace"],
            meta["name"],
            k8s.forbidden_message(second) if k8s.is_forbidden(second) else second,
        )
    if not (before.get("status") == "False" and before.get("message") == message):
        await k8s.post_event(client, owner, "Forbidden", message, "Warning")


async def sync_tokens(
    secrets: k8s.SecretData, pipeline: Mapping[str, Any], referencing: Iterable[tuple[str, str]]
) -> dict[str, Any] | None:
    """Bring the collector's token set in step with the pipeline's consumers (``referencing``:
    (kind, name) of the objects referencing it now); the ``TokensReady`` condition, None
    without auth. A Warning event ``TokenNotFound`` once per distinct set of consumers
    without a token."""
    settings = security.auth(parse_pipeline(pipeline.get("spec")))
    if settings is None:
        return None
    meta = pipeline["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    entries, problems, waiting = await k8s.read_tokens(
        secrets, namespace, consumer_tokens.consumers(settings, name, referencing)
    )
    labels = ", ".join(label for _, label in entries) or "none"
    secret = consumer_tokens.token_set_secret(name)
    written = await k8s.write_token_set(secrets, namespace, secret, entries)
    generation, now = meta.get("generation"), common.now()
    if written is k8s.TokenSetWrite.MISSING:  # the collector holds no token of ours
        return condition(
            TOKENS_READY,
            False,
            "TokenSetNotFound",
            f"the collector's token file, Secret {namespace}/{secret}, does not exist; it is "
            f"created with the pipeline's children and then filled with the tokens of: {labels}",
            generation=generation,
            now=now,
        )
    if written is k8s.TokenSetWrite.WRITTEN:
        log.info(
            "TracingPipeline %s/%s: the collector's token set now holds the tokens of: %s",
            namespace,
            name,
            labels,
        )
    if not problems and waiting:  # created by the consumers' own reconciles: no warning
        return condition(
            TOKENS_READY,
            False,
            "TokenPending",
            f"the token of {', '.join(waiting)} is not created yet (accepted: {labels})",
            generation=generation,
            now=now,
        )
    if not problems:
        return condition(
            TOKENS_READY,
            True,
            "TokensFound",
            f"the collector accepts the tokens of: {labels}",
            generation=generation,
            now=now,
        )
    message = "; ".join(problems) + f": not accepted until it has one (accepted: {labels})"
    before = find_condition(pipeline.get("status"), TOKENS_READY) or {}
    if not (before.get("status") == "False" and before.get("message") == message):
        log.warning("TracingPipeline %s/%s: %s", namespace, name, message)
        await k8s.post_event(secrets.client, pipeline, "TokenNotFound", message, "Warning")
    return condition(TOKENS_READY, False, "TokenNotFound", message, generation=generation, now=now)
