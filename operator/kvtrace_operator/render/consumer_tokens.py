"""One OTLP bearer token per consumer of a TracingPipeline (docs/security.md "Authentication").

Consumers of a pipeline with ``spec.security.auth``:

- ``pipeline``: the pipeline's own token (``tokenSecretRef``, else the generated
  ``NAME-otlp-token``): what the operator's TraceDelivery canary and self-tracing send, and
  what applications set up before per-consumer tokens keep sending;
- ``KVCluster/C``: each KVCluster referencing the pipeline, with its own generated Secret
  ``C-otlp-client-token`` (owned by the KVCluster, so deleted with it);
- ``consumer/N``: each entry of ``spec.security.auth.consumers`` (``tokenSecretRef``, else a
  generated ``PIPELINE-N-otlp-consumer-token`` owned by the pipeline);
- ``workload/NS/KIND/NAME``: each workload injected with the pipeline (render/injection.py),
  its Secret ``NAME-KIND-otlp-workload`` in its own namespace, owned by the workload.

The collector's token file is the Secret ``NAME-otlp-tokens`` (key ``tokens``): one line per
consumer, ``TOKEN LABEL``. The ``bearertokenauth`` extension (v0.161) takes the first
whitespace-separated field of each line as a token and ignores the rest, so the label names
the consumer in the file without being a token. The k8s layer writes the file
(k8s/secrets.py: it reads the consumers' tokens); here are the names, the rendered Secrets
(metadata only) and the pure file format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from kvtrace.shared.api import KVCLUSTER
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.labels import child_metadata
from kvtrace_operator.render.names import name_of
from kvtrace_operator.spec.common import TokenHolder
from kvtrace_operator.spec.pipeline import PipelineAuth

FIELD = "spec.security.auth.consumers"
TOKEN_KEY = "token"
TOKEN_SET_KEY = "tokens"
# On a rendered Secret: the key the operator fills with a random token when it creates it.
GENERATED_ANNOTATION = "kvtrace.dev/generated-key"
# On the token-set Secret: the operator rewrites its key from the consumers' tokens.
TOKEN_SET_ANNOTATION = "kvtrace.dev/token-set"
PIPELINE_LABEL = "pipeline"
PLACEHOLDER_LABEL = "placeholder-no-consumer"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# What a client can send in ``authorization: Bearer TOKEN`` through OTEL_EXPORTER_OTLP_HEADERS.
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


class Consumer(NamedTuple):
    """A consumer and the Secret key holding its token (in ``namespace``, empty for the
    pipeline's); ``generated``: the operator creates that Secret (a missing one is awaited,
    not an error)."""

    label: str
    secret: str
    key: str
    generated: bool = False
    namespace: str = ""


def pipeline_token_secret(pipeline_name: str) -> str:
    return f"{pipeline_name}-otlp-token"


def client_token_secret(cluster_name: str) -> str:
    return f"{cluster_name}-otlp-client-token"


def consumer_token_secret(pipeline_name: str, consumer: str) -> str:
    return f"{pipeline_name}-{consumer}-otlp-consumer-token"


def token_set_secret(pipeline_name: str) -> str:
    return f"{pipeline_name}-otlp-tokens"


def generated_secret(
    owner: dict[str, Any],
    name: str,
    component: str,
    key: str = TOKEN_KEY,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Secret the operator creates once with a random value in ``key`` (metadata only)."""
    metadata = child_metadata(owner, name, component)
    metadata["annotations"] = {GENERATED_ANNOTATION: key, **(extra or {})}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}


def validate(
    holders: tuple[TokenHolder, ...], field: str = FIELD, reserved: tuple[str, ...] = ()
) -> None:
    """``consumers`` (a KVCluster's ``clients``, under ``field``): distinct DNS-label names,
    none of ``reserved``, and a complete ``tokenSecretRef`` where one is given."""
    kind = field.rsplit(".", 1)[-1][:-1]  # consumer, client
    seen: set[str] = set()
    for index, holder in enumerate(holders):
        where, name = f"{field}[{index}]", holder.name
        if not _DNS_LABEL.match(name) or len(name) > 63:
            raise SpecError(
                f"{where}.name",
                "expected a DNS label (lower-case letters, digits, '-', "
                f"starting with a letter) of at most 63 characters, got {name!r}",
            )
        if name in seen or name in reserved:
            raise SpecError(
                f"{where}.name",
                f"duplicate {kind} {name!r}: each {kind} has one token"
                if name in seen
                else f"{name!r} is the generated token's name: choose another",
            )
        seen.add(name)
        ref = holder.token_secret_ref
        if ref is not None and not (ref.name and ref.key):
            raise SpecError(
                f"{where}.tokenSecretRef",
                f"expected {{name: SECRET, key: KEY}}, got {ref.as_dict()!r}",
            )


def pipeline_consumer(auth: PipelineAuth, pipeline_name: str) -> Consumer:
    ref = auth.token_secret_ref
    if ref:
        return Consumer(PIPELINE_LABEL, ref.name, ref.key)
    return Consumer(PIPELINE_LABEL, pipeline_token_secret(pipeline_name), TOKEN_KEY, True)


def declared_consumers(auth: PipelineAuth, pipeline_name: str) -> list[Consumer]:
    """The pipeline's ``consumers`` entries, in order."""
    result = []
    for entry in auth.consumers:
        ref = entry.token_secret_ref
        label = f"consumer/{entry.name}"
        result.append(
            Consumer(label, ref.name, ref.key)
            if ref
            else Consumer(label, consumer_token_secret(pipeline_name, entry.name), TOKEN_KEY, True)
        )
    return result


# The token Secret of an object that references the pipeline, by the object's kind: each
# source of consumers (KVClusters today) names its Secret here and feeds ``referencing``.
CLIENT_TOKEN_SECRETS: dict[str, Callable[[str], str]] = {KVCLUSTER: client_token_secret}
WORKLOAD = (
    "Workload"  # an injected workload (render/injection.py): its Secret is in its own namespace
)


def referencing_consumer(kind: str, name: str) -> Consumer:
    """The consumer an object referencing the pipeline is (its own generated token); an
    injected workload (``Workload``, ``NAMESPACE/KIND/NAME``) has it in its own namespace."""
    if kind == WORKLOAD:
        namespace, _, workload = name.partition("/")
        workload_kind, _, workload_name = workload.partition("/")
        return workload_consumer(
            namespace, workload, workload_secret_name(workload_kind, workload_name)
        )
    if kind not in CLIENT_TOKEN_SECRETS:
        raise ValueError(
            f"no token Secret for consumers of kind {kind!r} "
            f"(known: {', '.join(sorted(CLIENT_TOKEN_SECRETS))})"
        )
    return Consumer(f"{kind}/{name}", CLIENT_TOKEN_SECRETS[kind](name), TOKEN_KEY, True)


def consumers(
    auth: PipelineAuth, pipeline_name: str, referencing: Iterable[tuple[str, str]]
) -> list[Consumer]:
    """Every consumer whose token the collector accepts, derived from its sources (never
    accumulated): the pipeline's own, each object referencing it (``referencing``: (kind,
    name) pairs, e.g. the KVClusters whose tracing names it), each declared one. Same
    sources, same list, in one order."""
    return [
        pipeline_consumer(auth, pipeline_name),
        *(referencing_consumer(kind, name) for kind, name in sorted(set(referencing))),
        *declared_consumers(auth, pipeline_name),
    ]


def workload_secret_name(kind: str, name: str) -> str:
    """An injected workload's own Secret (token and CA bundle) in its namespace."""
    return f"{name}-{kind.lower()}-otlp-workload"[:253]


def workload_consumer(namespace: str, workload: str, secret: str) -> Consumer:
    """An injected workload (``KIND/NAME``) whose token is in its own namespace's ``secret``."""
    return Consumer(f"workload/{namespace}/{workload}", secret, TOKEN_KEY, True, namespace)


def generated_consumer_secrets(
    pipeline: dict[str, Any], auth: PipelineAuth
) -> list[dict[str, Any]]:
    """Generated Secrets of declared consumers without ``tokenSecretRef``."""
    return [
        generated_secret(
            pipeline, consumer_token_secret(name_of(pipeline), entry.name), "otlp-consumer-token"
        )
        for entry in auth.consumers
        if entry.token_secret_ref is None
    ]


def token_set(pipeline: dict[str, Any]) -> dict[str, Any]:
    """The collector's token file Secret (metadata only). Created with one random token
    nobody holds (so the file is never empty: the extension keeps its last tokens when the
    file becomes empty), then rewritten by the operator from the consumers' tokens."""
    return generated_secret(
        pipeline,
        token_set_secret(name_of(pipeline)),
        "otlp-tokens",
        TOKEN_SET_KEY,
        {TOKEN_SET_ANNOTATION: TOKEN_SET_KEY},
    )


def client_secret(cluster: dict[str, Any]) -> dict[str, Any]:
    """A KVCluster's own token Secret (owned by it: deleting the cluster deletes it)."""
    return generated_secret(cluster, client_token_secret(name_of(cluster)), "otlp-client-token")


# ---- the token file -------------------------------------------------------------------------


def usable(token: str) -> str | None:
    """The token a Secret value stands for (surrounding whitespace dropped), or None when it
    cannot be one (empty, inner whitespace, characters a header value cannot carry)."""
    token = token.strip()
    return token if _TOKEN.match(token) else None


def parse(text: str) -> list[tuple[str, str]]:
    """``(token, label)`` per line, as the extension reads them (first field = token)."""
    result = []
    for line in text.splitlines():
        fields = line.split()
        if fields:
            result.append((fields[0], " ".join(fields[1:])))
    return result


def compose(entries: Sequence[tuple[str, str]], placeholder: str) -> str:
    """The file for ``entries`` (``(token, label)``, in consumer order); ``placeholder`` (a
    random token nobody holds) alone when there are none."""
    lines = entries or [(placeholder, PLACEHOLDER_LABEL)]
    return "".join(f"{token} {label}\n" for token, label in lines)


def needs_rewrite(current: str, entries: Sequence[tuple[str, str]]) -> bool:
    """Whether the file differs from what ``entries`` ask for (a placeholder-only file
    stands for no entries)."""
    found = [(token, label) for token, label in parse(current) if label != PLACEHOLDER_LABEL]
    return found != list(entries) or not parse(current)
