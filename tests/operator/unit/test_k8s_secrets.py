"""Secrets against a fake API server (Secrets only): what is read of them (from the watch's
index when it saw them; their data again only when the watch saw them change), the three outcomes of k8s.write_token_set() and the TokensReady
condition each one gives."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx2
import pytest
from test_k8s_apply import client_for

from kvtrace.shared.api import MANAGED_BY, MANAGED_BY_LABEL
from kvtrace_operator import k8s
from kvtrace_operator.handlers import secret_gate
from kvtrace_operator.k8s.secrets import earlier_owner
from kvtrace_operator.render.consumer_tokens import TOKEN_SET_KEY, parse
from kvtrace_operator.render.secret_refs import Found

pytestmark = pytest.mark.unit

PIPELINE = {
    "apiVersion": "kvtrace.dev/v1alpha1",
    "kind": "TracingPipeline",
    "metadata": {"name": "traces", "namespace": "ns1", "uid": "p-uid", "generation": 3},
    "spec": {"security": {"auth": {"enabled": True}}},
}


def secret(name: str, key: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "ns1", "resourceVersion": "1"},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }


class Secrets:
    """GET and merge-PATCH of Secrets in ns1; records the writes."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {o["metadata"]["name"]: o for o in objects}
        self.writes: list[str] = []
        self.reads: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        if request.method == "GET":
            self.reads.append(name)
        if request.method == "PATCH":
            self.writes.append(name)
            self.objects[name]["data"].update(json.loads(request.content)["data"])
        found = self.objects.get(name)
        if found is None:
            return httpx2.Response(
                404, json={"kind": "Status", "apiVersion": "v1", "code": 404, "message": "nf"}
            )
        return httpx2.Response(200, json=found)

    def tokens(self) -> list[tuple[str, str]]:
        raw = self.objects["traces-otlp-tokens"]["data"][TOKEN_SET_KEY]
        return parse(base64.b64decode(raw).decode())


async def test_written_unchanged_and_missing_are_distinct_outcomes() -> None:
    server = Secrets(
        secret("traces-otlp-tokens", TOKEN_SET_KEY, "nobody placeholder-no-consumer\n")
    )
    client = k8s.SecretData(client_for(server))
    entries = [("t1", "pipeline"), ("t2", "KVCluster/a")]
    assert await k8s.write_token_set(client, "ns1", "traces-otlp-tokens", entries) is (
        k8s.TokenSetWrite.WRITTEN
    )
    assert server.tokens() == entries
    assert await k8s.write_token_set(client, "ns1", "traces-otlp-tokens", entries) is (
        k8s.TokenSetWrite.UNCHANGED
    )
    assert await k8s.write_token_set(client, "ns1", "gone-otlp-tokens", entries) is (
        k8s.TokenSetWrite.MISSING
    )
    assert server.writes == ["traces-otlp-tokens"]


async def test_tokens_ready_is_false_when_the_token_file_does_not_exist() -> None:
    """Every consumer has its token, but no file holds them: the collector accepts none of
    them, so TokensReady is False and names the missing Secret (it used to say True)."""
    server = Secrets(secret("traces-otlp-token", "token", "pipeline-token"))
    cond = await secret_gate.sync_tokens(k8s.SecretData(client_for(server)), PIPELINE, [])
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "TokenSetNotFound")
    assert "Secret ns1/traces-otlp-tokens" in cond["message"] and "pipeline" in cond["message"]
    assert server.writes == []


async def test_tokens_ready_is_true_once_the_file_holds_every_consumer() -> None:
    server = Secrets(
        secret("traces-otlp-token", "token", "pipeline-token"),
        secret("a-otlp-client-token", "token", "a-token"),
        secret("traces-otlp-tokens", TOKEN_SET_KEY, "nobody placeholder-no-consumer\n"),
    )
    cond = await secret_gate.sync_tokens(
        k8s.SecretData(client_for(server)), PIPELINE, [("KVCluster", "a")]
    )
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "TokensFound")
    assert server.tokens() == [("pipeline-token", "pipeline"), ("a-token", "KVCluster/a")]


async def test_with_the_watch_running_what_it_has_not_seen_is_not_read_needlessly() -> None:
    """With the Secret watch running: a KVCluster's token Secret it has not seen does not
    exist yet (its event brings the pipeline back): awaited, not read; one in another
    namespace (an injected workload's, maybe unwatched) is read. A Secret the operator wrote
    itself is served as written until the watch reports it; without the watch it is read."""
    server = Secrets(
        secret("traces-otlp-token", "token", "pipeline-token"),
        secret("traces-otlp-tokens", TOKEN_SET_KEY, "nobody placeholder-no-consumer\n"),
    )
    versions = {("ns1", "traces-otlp-token"): "1", ("ns1", "traces-otlp-tokens"): "1"}
    data = k8s.SecretData(
        client_for(server), lambda ns, name: versions.get((ns, name)), watching=True
    )
    cond = await secret_gate.sync_tokens(data, PIPELINE, [("KVCluster", "a")])
    assert cond is not None and cond["reason"] == "TokenPending", cond
    assert "a-otlp-client-token" not in server.reads
    assert data.unseen("ns1", "a-otlp-client-token") and not data.unseen("ns1", "traces-otlp-token")
    entries, _, waiting = await k8s.read_tokens(
        data, "ns1", [k8s.secrets.consumer_tokens.workload_consumer("other", "Deployment/w", "w")]
    )
    assert server.reads[-1] == "w" and waiting == ["workload/other/Deployment/w"]

    written = secret("tls", "tls.crt", "pem") | {
        "metadata": {"name": "tls", "namespace": "ns1", "resourceVersion": "5"}
    }
    data.remember(written, written=True)
    reads = len(server.reads)
    assert (await data.get("tls", "ns1") or {})["data"] == written["data"]
    assert len(server.reads) == reads and data.found("ns1", "tls") == Found(
        "5", frozenset({"tls.crt"})
    )
    unwatched = k8s.SecretData(client_for(server), lambda ns, name: versions.get((ns, name)))
    unwatched.remember(written, written=True)
    assert await unwatched.get("tls", "ns1") is None and server.reads[-1] == "tls"
    assert not unwatched.unseen("ns1", "a-otlp-client-token")


async def test_secrets_the_watch_saw_are_not_read_again() -> None:
    """Versions and key names come from the watch's index; a Secret it has not seen (created
    a moment ago, or missing) is read."""
    server = Secrets(secret("new", "token", "t"), secret("seen", "token", "old"))
    index = {
        "seen": k8s.secrets.found(
            secret("seen", "token", "t") | {"metadata": {"resourceVersion": "7"}}
        )
    }
    found = await k8s.read_secrets(client_for(server), "ns1", ["seen", "new", "gone"], index.get)
    assert found == {
        "seen": Found("7", frozenset({"token"})),
        "new": Found("1", frozenset({"token"})),
        "gone": None,
    }
    assert server.reads == ["gone", "new"]


async def test_secret_data_is_read_again_only_when_the_watch_saw_a_new_version() -> None:
    """SecretData serves a Secret's data again while the watch reports the version it was
    read at; a new version, a Secret the watch has not seen, or no watch at all: read. What
    it keeps has no managedFields, and a deleted Secret is forgotten."""
    with_fields = secret("tls", "tls.crt", "pem") | {
        "metadata": {
            "name": "tls",
            "namespace": "ns1",
            "resourceVersion": "1",
            "managedFields": [{}],
        }
    }
    server = Secrets(with_fields, secret("other", "token", "t"))
    versions = {("ns1", "tls"): "1"}
    data = k8s.SecretData(client_for(server), lambda ns, name: versions.get((ns, name)))
    first = await data.get("tls", "ns1")
    assert first is not None and "managedFields" not in first["metadata"]
    assert await data.get("tls", "ns1") == first
    assert server.reads == ["tls"], "the same version was read again"
    await data.get("other", "ns1")
    await data.get("other", "ns1")
    assert server.reads == ["tls", "other", "other"], "a Secret the watch has not seen is read"
    assert len(data) == 1, "a Secret the watch has not seen is kept"
    versions[("ns1", "tls")] = "2"
    await data.get("tls", "ns1")
    assert server.reads[-1] == "tls", "a new version was not read"
    data.forget("ns1", "tls")
    assert not data.holds("ns1", "tls")
    # one the operator just wrote is kept at once: the watch reports its version soon
    data.remember(
        secret("new", "token", "t")
        | {"metadata": {"name": "new", "namespace": "ns1", "resourceVersion": "9"}},
        written=True,
    )
    versions[("ns1", "new")] = "9"
    assert (await data.get("new", "ns1") or {})["data"] and "new" not in server.reads

    uncached = k8s.SecretData(client_for(server))
    await uncached.get("tls", "ns1")
    await uncached.get("tls", "ns1")
    assert server.reads[-2:] == ["tls", "tls"] and len(uncached) == 0


def stale_check_secret(owner_uid: str, token: str | None) -> dict[str, Any]:
    """A generated Secret of KVCluster "kv" owned by ``owner_uid``."""
    metadata = {
        "name": "kv-kv-client-token",
        "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        "ownerReferences": [{"kind": "KVCluster", "name": "kv", "uid": owner_uid}],
    }
    return {"metadata": metadata, **({"data": {"token": token}} if token else {})}


def test_earlier_owner_needs_our_label_and_the_same_kind_and_name_with_another_uid() -> None:
    ours = stale_check_secret("earlier-uid", "t")
    assert earlier_owner(ours, stale_check_secret("new-uid", None))
    assert not earlier_owner(ours, stale_check_secret("earlier-uid", None))
    foreign = {**ours, "metadata": {**ours["metadata"], "labels": {}}}
    assert not earlier_owner(foreign, stale_check_secret("new-uid", None))
    other = stale_check_secret("new-uid", None)
    other["metadata"]["ownerReferences"][0]["name"] = "another"
    assert not earlier_owner(ours, other)
