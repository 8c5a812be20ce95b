"""Which Secrets the rendered workloads use, what is missing, and the checksum that rolls a
workload when a Secret it reads only at start changes.

Pure: the handlers read the referenced Secrets (their ``resourceVersion`` and key names, never
the data) and pass what they found here. A pod reads an environment variable from a Secret
(``secretKeyRef``, ``envFrom``) only when it starts, and most programs read a mounted file only
then too; so a workload's pod-template checksum covers the ``resourceVersion`` of every Secret
it uses, except volumes its program re-reads (``security.RELOADED_VOLUMES``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from kvtrace_operator.render import consumer_tokens, tls
from kvtrace_operator.render.checksum import checksum
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.labels import CHECKSUM_ANNOTATION
from kvtrace_operator.render.names import kv_tls_base, name_of
from kvtrace_operator.render.pipeline import render_pipeline
from kvtrace_operator.render.security import (
    GENERATED_ANNOTATION,
    RELOADED_VOLUMES,
    auth,
    client_volumes,
)
from kvtrace_operator.render.status import condition, merge_conditions
from kvtrace_operator.spec import parse_kvcluster, parse_pipeline

WORKLOAD_KINDS = ("StatefulSet", "Deployment")
SECRETS_READY = "SecretsReady"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_PENDING = "SecretPending"


class SecretRef(NamedTuple):
    """One use of a Secret by a pod: ``key`` None means every key (``envFrom``, a whole
    volume); ``rolls``: a change needs a new pod; ``optional``: the pod starts without it."""

    name: str
    key: str | None
    rolls: bool
    optional: bool = False


def _volume_refs(volume: Mapping[str, Any]) -> list[SecretRef]:
    rolls = volume.get("name") not in RELOADED_VOLUMES
    sources = (
        [volume["secret"] | {"name": volume["secret"].get("secretName")}]
        if "secret" in volume
        else [
            source["secret"]
            for source in (volume.get("projected") or {}).get("sources") or ()
            if "secret" in source
        ]
    )
    return [
        SecretRef(str(source["name"]), key, rolls, bool(source.get("optional")))
        for source in sources
        for key in ([item["key"] for item in source.get("items") or ()] or [None])
    ]


def pod_secret_refs(pod_spec: Mapping[str, Any]) -> list[SecretRef]:
    """Every Secret a pod spec uses: env (``secretKeyRef``), ``envFrom`` and volumes."""
    refs: list[SecretRef] = []
    for container in [*(pod_spec.get("initContainers") or ()), *(pod_spec.get("containers") or ())]:
        for item in container.get("env") or ():
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                refs.append(
                    SecretRef(str(ref["name"]), str(ref["key"]), True, bool(ref.get("optional")))
                )
        for source in container.get("envFrom") or ():
            if "secretRef" in source:
                ref = source["secretRef"]
                refs.append(SecretRef(str(ref["name"]), None, True, bool(ref.get("optional"))))
    for volume in pod_spec.get("volumes") or ():
        refs += _volume_refs(volume)
    return refs


def workload_secret_refs(obj: Mapping[str, Any]) -> list[SecretRef]:
    if obj.get("kind") not in WORKLOAD_KINDS:
        return []
    return pod_secret_refs(obj["spec"]["template"]["spec"])


def generated_secrets(children: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the Secrets among ``children`` that the operator creates itself."""
    return {
        obj["metadata"]["name"]
        for obj in children
        if obj.get("kind") == "Secret"
        and GENERATED_ANNOTATION in (obj["metadata"].get("annotations") or {})
    }


def referenced_secrets(children: Iterable[Mapping[str, Any]]) -> list[SecretRef]:
    """Every Secret use by the rendered workloads, the operator's own Secrets left out (it
    creates them in the same apply), each once, sorted."""
    children = list(children)
    own = generated_secrets(children)
    refs = {ref for obj in children for ref in workload_secret_refs(obj) if ref.name not in own}
    return sorted(refs, key=lambda ref: (ref.name, ref.key or "", ref.rolls, ref.optional))


class Found(NamedTuple):
    """What the k8s layer read of one Secret: never its data."""

    resource_version: str
    keys: frozenset[str]


def missing_secrets(
    refs: Sequence[SecretRef], found: Mapping[str, Found | None], namespace: str
) -> list[str]:
    """One message per required Secret that does not exist or lacks a key the pods use."""
    problems: list[str] = []
    for ref in refs:
        if ref.optional:
            continue
        secret = found.get(ref.name)
        key = f" (key {ref.key})" if ref.key else ""
        if secret is None:
            message = f"Secret {namespace}/{ref.name}{key} does not exist"
        elif ref.key is not None and ref.key not in secret.keys:
            message = f"Secret {namespace}/{ref.name} has no key {ref.key}"
        else:
            continue
        if message not in problems:
            problems.append(message)
    return problems


def roll_on_secret_changes(
    children: Sequence[Mapping[str, Any]], found: Mapping[str, Found | None]
) -> list[dict[str, Any]]:
    """``children`` with the checksum annotation of every workload that uses a Secret it
    reads only at start extended by those Secrets' resourceVersions (so a changed Secret
    rolls it); workloads without such Secrets keep the checksum of their configuration."""
    result = []
    for obj in children:
        names = sorted({ref.name for ref in workload_secret_refs(obj) if ref.rolls})
        if not names:
            result.append(dict(obj))
            continue
        copied = copy.deepcopy(dict(obj))
        annotations = copied["spec"]["template"]["metadata"].setdefault("annotations", {})
        versions = {name: getattr(found.get(name), "resource_version", "") for name in names}
        annotations[CHECKSUM_ANNOTATION] = checksum(
            {"config": annotations.get(CHECKSUM_ANNOTATION, ""), "secrets": versions}
        )
        result.append(copied)
    return result


def made_by_pipeline(pipeline: dict[str, Any]) -> set[str]:
    """Secrets the operator creates for ``pipeline`` that its consumers' pods use (the trust
    bundle of managed or cert-manager TLS; a KVCluster's token is its own child): a consumer
    reconciled before its pipeline waits for them instead of reporting them missing."""
    spec = parse_pipeline(pipeline.get("spec"))
    return {tls.trust_secret(name_of(pipeline))} if spec.security.tls.every_hop else set()


def made_for_members(cluster: dict[str, Any]) -> set[str]:
    """The TLS Secrets of a KVCluster's members that the operator (mode managed) or
    cert-manager (mode certManager) writes: awaited, not reported missing."""
    spec = parse_kvcluster(cluster.get("spec"))
    if not spec.security.tls.every_hop:
        return set()
    return {
        tls.trust_secret(kv_tls_base(name_of(cluster))),
        *(leaf["secret"] for leaf in tls.leaves(cluster, spec)),
    }


def secrets_condition(
    refs: Sequence[SecretRef],
    problems: Sequence[str],
    *,
    generation: int | None,
    now: str,
    waiting: Sequence[str] = (),
) -> dict[str, Any]:
    """``SecretsReady``: False while a referenced Secret or key is missing: reason
    SecretNotFound, or SecretPending when only Secrets the operator is about to create are."""
    if problems:
        return condition(
            SECRETS_READY,
            False,
            SECRET_NOT_FOUND,
            "; ".join(problems) + ": nothing is applied until it exists "
            "(pods would not start: CreateContainerConfigError)",
            generation=generation,
            now=now,
        )
    if waiting:
        return condition(
            SECRETS_READY,
            False,
            SECRET_PENDING,
            "; ".join(waiting) + " yet: the pipeline's reconcile creates it; nothing is "
            "applied until then",
            generation=generation,
            now=now,
        )
    used = sorted({ref.name for ref in refs})
    message = (
        f"every referenced Secret exists ({', '.join(used)})" if used else "no Secret is referenced"
    )
    return condition(SECRETS_READY, True, "SecretsFound", message, generation=generation, now=now)


def with_conditions(
    status: Mapping[str, Any], previous: Mapping[str, Any] | None, extra: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """``status`` with ``extra`` conditions replacing (or added after) those of the same type;
    transition times kept from ``previous`` where the status did not change."""
    types = {cond["type"] for cond in extra}
    current = [cond for cond in status.get("conditions") or () if cond["type"] not in types] + list(
        extra
    )
    return {**status, "conditions": merge_conditions((previous or {}).get("conditions"), current)}


def pipeline_secret_names(pipeline: dict[str, Any]) -> set[str]:
    """Every Secret a pipeline's pods or its consumers' pods use, and those holding the tokens
    of the pipeline and its declared consumers (for the Secret watch's index; the KVClusters'
    own tokens have an index of their own); none for a pipeline that cannot be rendered."""
    try:
        children = render_pipeline(pipeline)
    except SpecError:
        return set()
    spec = parse_pipeline(pipeline.get("spec"))
    client = {"volumes": [volume for volume, _ in client_volumes(spec, name_of(pipeline))]}
    uses = [
        *(ref for obj in children for ref in workload_secret_refs(obj)),
        *pod_secret_refs(client),
    ]
    settings = auth(spec)
    tokens = (
        {consumer.secret for consumer in consumer_tokens.consumers(settings, name_of(pipeline), ())}
        if settings is not None
        else set()
    )
    return {ref.name for ref in uses} | generated_secrets(children) | tokens
