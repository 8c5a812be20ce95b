"""Secrets: what the operator learns of the ones its workloads reference (resourceVersion and
key names: the data is dropped at once and never logged, posted or written anywhere), and
creating the ones it generates (a random token, once; never rotated behind the user's back)."""

from __future__ import annotations

import base64
import enum
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from kvtrace.shared.api import MANAGED_BY, MANAGED_BY_LABEL
from kvtrace_operator.k8s.client import get_object, to_dict
from kvtrace_operator.render import consumer_tokens
from kvtrace_operator.render.query_access import GENERATED_PREFIX_ANNOTATION
from kvtrace_operator.render.secret_refs import Found
from kvtrace_operator.render.security import GENERATED_ANNOTATION

TOKEN_BYTES = 32  # 256 random bits, URL-safe base64 (43 characters of [A-Za-z0-9_-])


def found(secret: Mapping[str, Any]) -> Found:
    """What the operator keeps of a Secret: its resourceVersion and key names, never data."""
    return Found(
        str(secret["metadata"].get("resourceVersion", "")),
        frozenset((secret.get("data") or {}).keys())
        | frozenset((secret.get("stringData") or {}).keys()),
    )


async def read_secrets(
    client: AsyncClient,
    namespace: str,
    names: Iterable[str],
    known: Callable[[str], Found | None] | None = None,
) -> dict[str, Found | None]:
    """resourceVersion and key names of each Secret, None for a missing one. ``known``: what
    a watch already saw of a Secret (None when it saw none: then it is read, as a Secret
    created a moment ago may not be seen yet). Raises lightkube.ApiError otherwise (403 when
    the operator may not get Secrets)."""
    result: dict[str, Found | None] = {}
    for name in sorted(set(names)):
        seen = known(name) if known else None
        if seen is None:
            secret = await get_object(client, Secret, name, namespace)
            seen = None if secret is None else found(secret)
        result[name] = seen
    return result


class SecretData:
    """The Secrets whose data the operator must read (TLS material, consumer tokens, the
    token set), each kept with the resourceVersion it was read at and served again while
    ``version`` (the Secret watch: handlers/secret_watch.py) reports that same version: a
    reconcile of an unchanged owner reads no Secret from the API server. A Secret the watch
    has not seen (or without ``version``) is read every time, unless the operator wrote it
    itself and the watch runs (``watching``): then what it wrote is the newest there is until
    the watch reports it. An entry goes when its Secret is deleted (``forget``, from the
    Secret watch); the data is never logged."""

    def __init__(
        self,
        client: AsyncClient,
        version: Callable[[str, str], str | None] | None = None,
        *,
        watching: bool = False,
    ) -> None:
        self.client, self.version, self.watching = client, version, watching
        self._entries: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The Secret as a plain dict (data included), None when it does not exist."""
        key = (namespace, name)
        current = self.version(namespace, name) if self.version else None
        kept = self._entries.get(key)
        if kept is not None and (kept[0] == current or (current is None and self.watching)):
            return kept[1]
        secret = await get_object(self.client, Secret, name, namespace)
        if secret is None:
            self._entries.pop(key, None)
            return None
        return self.remember(secret)

    def remember(self, secret: Mapping[str, Any], *, written: bool = False) -> dict[str, Any]:
        """Keep a Secret read or just ``written`` by the operator (as the API server returned
        it): its name, labels, annotations, resourceVersion and data (not its managedFields);
        returns that. A Secret read is kept only when the watch knows it (its deletion then
        drops the entry); one written is in a watched namespace, where the watch sees it soon."""
        meta = secret.get("metadata") or {}
        kept = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                key: meta[key]
                for key in ("name", "namespace", "resourceVersion", "labels", "annotations")
                if key in meta
            },
            "data": dict(secret.get("data") or {}),
        }
        key = (str(meta.get("namespace", "")), str(meta["name"]))
        if (
            self.version is not None
            and meta.get("resourceVersion")
            and (written or self.version(*key))
        ):
            self._entries[key] = (str(meta["resourceVersion"]), kept)
        return kept

    def holds(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._entries

    def found(self, namespace: str, name: str) -> Found | None:
        """The version and key names of a Secret kept here (None: none is)."""
        kept = self._entries.get((namespace, name))
        return None if kept is None else Found(kept[0], frozenset(kept[1]["data"]))

    def unseen(self, namespace: str, name: str) -> bool:
        """True when the Secret watch runs and has seen no such Secret, nor was it written
        here: it does not exist yet, and the watch's event will say when it does (only for
        Secrets of a watched namespace)."""
        return (
            self.watching
            and self.version is not None
            and self.version(namespace, name) is None
            and (namespace, name) not in self._entries
        )

    def forget(self, namespace: str, name: str) -> None:
        """Drop a Secret that was deleted."""
        self._entries.pop((namespace, name), None)


def is_generated(obj: Mapping[str, Any]) -> bool:
    """A rendered Secret whose key the operator fills itself (render.security.token_secret)."""
    return obj.get("kind") == "Secret" and GENERATED_ANNOTATION in (
        obj["metadata"].get("annotations") or {}
    )


def metadata_only(secret: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret without its data (what the rest of the operator gets to see)."""
    return {key: value for key, value in secret.items() if key not in ("data", "stringData")}


def generated_data(obj: Mapping[str, Any]) -> dict[str, str]:
    """``data`` of a new generated Secret: its generated key with a fresh random token."""
    annotations = obj["metadata"]["annotations"]
    # e.g. "kvtrace:" before the token makes the key a htpasswd line (render/query_access.py)
    token = annotations.get(GENERATED_PREFIX_ANNOTATION, "") + secrets.token_urlsafe(TOKEN_BYTES)
    return {annotations[GENERATED_ANNOTATION]: base64.b64encode(token.encode()).decode()}


def earlier_owner(existing: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    """True when ``existing`` is a Secret we generated for an earlier owner of the same kind and
    name (deleted and created again before the garbage collector removed its dependents): the
    collector will delete it, so it must not be adopted, and its token belongs to the old one."""
    labels = existing["metadata"].get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return False
    wanted = {
        (ref.get("kind"), ref.get("name")): ref.get("uid")
        for ref in obj["metadata"].get("ownerReferences") or []
    }
    for ref in existing["metadata"].get("ownerReferences") or []:
        uid = wanted.get((ref.get("kind"), ref.get("name")))
        if uid and ref.get("uid") and ref["uid"] != uid:
            return True
    return False


async def ensure_generated(
    client: AsyncClient,
    obj: Mapping[str, Any],
    namespace: str,
    attempts: int = 3,
    keep: SecretData | None = None,
    *,
    absent: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Create the rendered Secret with a random token in its generated key unless it exists.
    An existing one keeps its token; only when it has none (it was applied without data, e.g.
    from ``kvtrace render`` output, and carries our managed-by label) the key is added, once.
    One left by an earlier owner of the same name (``earlier_owner``) is deleted and made
    again with a new token. Returns (the Secret without data, created); ``keep``: the
    SecretData that keeps the one created (its token is read next: the pipeline's token file).
    ``absent``: the caller's watch has seen no such Secret, so it is created without reading
    it first (a new owner's: one request, not two); should it exist after all, the create
    answers 409 and the one found is read and handled as above."""
    name = obj["metadata"]["name"]
    existing = None if absent else await get_object(client, Secret, name, namespace)
    if existing is not None and attempts > 0 and earlier_owner(existing, obj):
        try:
            await client.delete(Secret, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        existing = None
    if existing is not None:
        key = obj["metadata"]["annotations"][GENERATED_ANNOTATION]
        labels = existing["metadata"].get("labels") or {}
        if key not in (existing.get("data") or {}) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
            existing = to_dict(
                await client.patch(
                    Secret,
                    name,
                    {"data": generated_data(obj)},
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
            )
        return metadata_only({"apiVersion": "v1", "kind": "Secret", **existing}), False
    body = {**obj, "data": generated_data(obj)}
    try:
        secret: Any = Secret.from_dict(body)  # the rendered Secret names its namespace
        created = to_dict(await client.create(secret))
    except ApiError as exc:
        if exc.status.code != 409:  # created meanwhile (another reconcile): keep that one
            raise
        return await ensure_generated(client, obj, namespace, attempts - 1, keep)
    if keep is not None:
        keep.remember(created, written=True)
    return metadata_only({"apiVersion": "v1", "kind": "Secret", **created}), True


# ---- the collector's token set (render/consumer_tokens.py) ----------------------------------


def _decoded(secret: Mapping[str, Any], key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw).decode()
    except (ValueError, UnicodeDecodeError):
        return ""  # not text: not a usable token either


async def read_tokens(
    secret_data: SecretData, namespace: str, consumers: Iterable[consumer_tokens.Consumer]
) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """``(token, label)`` of every consumer whose Secret key holds a usable token, one message
    per consumer that has none (naming the Secret and key, never a value), and the labels of
    consumers whose generated Secret is not created yet (a new KVCluster's)."""
    entries: list[tuple[str, str]] = []
    problems: list[str] = []
    waiting: list[str] = []
    for consumer in consumers:
        if (
            consumer.generated
            and not consumer.namespace
            and secret_data.unseen(namespace, consumer.secret)
        ):
            waiting.append(consumer.label)  # its owner's reconcile makes it: no read until then
            continue
        secret = await secret_data.get(consumer.secret, consumer.namespace or namespace)
        where = f"Secret {consumer.namespace or namespace}/{consumer.secret}"
        value = None if secret is None else _decoded(secret, consumer.key)
        token = consumer_tokens.usable(value) if value is not None else None
        if secret is None and consumer.generated:
            waiting.append(consumer.label)
        elif secret is None:
            problems.append(f"{where} (key {consumer.key}) of {consumer.label} does not exist")
        elif value is None:
            problems.append(f"{where} of {consumer.label} has no key {consumer.key}")
        elif token is None:
            problems.append(
                f"{where} key {consumer.key} of {consumer.label} holds no usable token "
                "(one token of letters, digits and -._~+/=)"
            )
        else:
            entries.append((token, consumer.label))
    return entries, problems, waiting


class TokenSetWrite(enum.Enum):
    """What write_token_set() found and did."""

    WRITTEN = "written"  # the file differed from the consumers' tokens: rewritten
    UNCHANGED = "unchanged"  # the file already holds exactly those tokens
    MISSING = "missing"  # the token-set Secret does not exist: nothing written


async def write_token_set(
    secret_data: SecretData, namespace: str, name: str, entries: list[tuple[str, str]]
) -> TokenSetWrite:
    """Rewrite the token-set Secret's file when it differs from ``entries`` (the collector
    re-reads it once the kubelet updated the volume). MISSING when the Secret does not exist
    (the pipeline's apply creates it; nobody can then say which tokens the collector holds)."""
    existing = await secret_data.get(name, namespace)
    if existing is None:
        return TokenSetWrite.MISSING
    current = _decoded(existing, consumer_tokens.TOKEN_SET_KEY) or ""
    if not consumer_tokens.needs_rewrite(current, entries):
        return TokenSetWrite.UNCHANGED
    placeholder = next(
        (
            token
            for token, label in consumer_tokens.parse(current)
            if label == consumer_tokens.PLACEHOLDER_LABEL
        ),
        None,
    ) or secrets.token_urlsafe(TOKEN_BYTES)
    text = base64.b64encode(consumer_tokens.compose(entries, placeholder).encode()).decode()
    written = await secret_data.client.patch(
        Secret,
        name,
        {"data": {consumer_tokens.TOKEN_SET_KEY: text}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    secret_data.remember(to_dict(written), written=True)
    return TokenSetWrite.WRITTEN
