"""Secrets the operator's workloads use, on the real local cluster (docs/security.md):

- a changed member token Secret rolls the KV members (their pod-template checksum changes),
  an unchanged one does not, and the collector (which re-reads its token file) never rolls; a
  changed pipeline token only rewrites the collector's token set (nobody rolls);
- a missing Secret sets ``SecretsReady=False`` (reason SecretNotFound, naming
  namespace/name/key) with an event, applies nothing, and creating it heals both kinds at
  once: the operator watches Secrets (the resync timer is 10 minutes here);
- without ``tokenSecretRef`` the operator creates ``NAME-otlp-token`` once (owner reference,
  labels, >= 32 random bytes), keeps it across reconciles, and re-creates a deleted one; each
  KVCluster gets ``CLUSTER-otlp-client-token`` the same way, and a deleted one rolls its members
  onto a new token.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

import pytest

from kvtrace_operator.render import render_pipeline

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0
CHECKSUM = "kvtrace.dev/config-checksum"
# A resync far beyond every timeout below: what heals or rolls comes from the Secret watch.
SLOW_RESYNC = pytest.mark.operator_args("--resync-interval", "600")


def pipeline(auth: dict[str, Any], name: str = "traces") -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": name},
        "spec": {"sampling": {"mode": "head", "ratio": 1}, "security": {"auth": auth}},
    }


def kvcluster(name: str = "kv", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "replicationFactor": 1,
            "tracing": {"pipelineRef": {"name": "traces"}},
        },
    }


def token_secret(name: str, token: str, key: str = "token") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": {key: token},
    }


def tls_secret(with_ca: bool = True) -> dict[str, Any]:
    """Key names are all the operator checks (pods do not run here): placeholder contents."""
    data = {
        "tls.crt": f"crt {secrets.token_hex(4)}",
        "tls.key": "key",
        **({"ca.crt": "ca"} if with_ca else {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "late-tls"},
        "type": "Opaque",
        "stringData": data,
    }


def checksum(kube: Any, kind: str, name: str) -> str | None:
    obj = kube.get(kind, name)
    return (
        None if obj is None else str(obj["spec"]["template"]["metadata"]["annotations"][CHECKSUM])
    )


def condition(kube: Any, kind: str, name: str, type_: str) -> dict[str, Any]:
    return kube.condition(kind, name, type_) or {}


def event_reasons(kube: Any, name: str) -> set[str]:
    return {e["reason"] for e in kube.list("events") if e["involvedObject"]["name"] == name}


def wait_secrets_ready(kube: Any, poll: Any, kind: str, name: str, status: str) -> dict[str, Any]:
    poll(
        lambda: condition(kube, kind, name, "SecretsReady").get("status") == status,
        timeout=TIMEOUT,
        message=f"{kind}/{name} SecretsReady={status}: {condition(kube, kind, name, 'SecretsReady')}",
    )
    return condition(kube, kind, name, "SecretsReady")


def token_set(kube: Any) -> str:
    data = (kube.get("secret", "traces-otlp-tokens") or {}).get("data") or {}
    return base64.b64decode(data.get("tokens", "")).decode()


@SLOW_RESYNC
def test_a_changed_token_secret_rolls_the_members_and_nothing_else(
    operator: Any, kube_ns: Any, poll: Any
) -> None:
    kube_ns.apply(token_secret("otlp-token", secrets.token_urlsafe(32)))
    kube_ns.apply(
        pipeline({"enabled": True, "tokenSecretRef": {"name": "otlp-token", "key": "token"}}),
        kvcluster(),
    )
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "True")
    poll(
        lambda: checksum(kube_ns, "statefulset", "kv") is not None,
        timeout=TIMEOUT,
        message="StatefulSet kv",
    )
    members, collector = (
        checksum(kube_ns, "statefulset", "kv"),
        checksum(kube_ns, "deployment", "traces-collector"),
    )
    assert collector is not None

    # A Secret nobody references changes: nothing rolls.
    kube_ns.apply(token_secret("unrelated", secrets.token_urlsafe(32)))
    # The pipeline's own token changes: only the collector's token set follows (re-read, no roll).
    changed = secrets.token_urlsafe(32)
    kube_ns.apply(token_secret("otlp-token", changed))
    poll(
        lambda: changed in token_set(kube_ns),
        timeout=30,
        message="the token set holds the changed token",
    )
    assert checksum(kube_ns, "statefulset", "kv") == members
    # The members' own token changes: they roll (env is read at start), the collector does not.
    kube_ns.apply(token_secret("kv-otlp-client-token", secrets.token_urlsafe(32)))
    poll(
        lambda: checksum(kube_ns, "statefulset", "kv") != members,
        timeout=30,
        message="the StatefulSet's template checksum changes after the token Secret changed",
    )
    rolled = checksum(kube_ns, "statefulset", "kv")
    assert checksum(kube_ns, "deployment", "traces-collector") == collector

    # A reconcile with the Secret unchanged (scaling rewrites the peers file only): no roll.
    kube_ns.run("patch", "kvcluster", "kv", "--type=merge", "-p", '{"spec": {"replicas": 2}}')
    poll(
        lambda: (kube_ns.get("statefulset", "kv") or {}).get("spec", {}).get("replicas") == 2,
        timeout=TIMEOUT,
        message="StatefulSet scaled to 2",
    )
    assert checksum(kube_ns, "statefulset", "kv") == rolled
    assert checksum(kube_ns, "deployment", "traces-collector") == collector
    # The checksum is a digest: no Secret value in any annotation.
    assert re.fullmatch(r"[0-9a-f]{64}", rolled or "")


@SLOW_RESYNC
def test_a_missing_secret_is_a_condition_and_creating_it_heals(
    operator: Any, kube_ns: Any, poll: Any
) -> None:
    # Both kinds' pods read the TLS Secret at start: the collector its serving certificate, the
    # members its CA (tokens are not referenced by the user's Secrets any more: the members'
    # is their cluster's own, the collector's token set is the pipeline's).
    pipe = pipeline({"enabled": True})
    pipe["spec"]["security"]["tls"] = {"enabled": True, "secretName": "late-tls"}
    kube_ns.apply(pipe, kvcluster())
    for kind, name, key in (
        ("tracingpipeline", "traces", "tls.crt"),
        ("kvcluster", "kv", "ca.crt"),
    ):
        cond = wait_secrets_ready(kube_ns, poll, kind, name, "False")
        assert cond["reason"] == "SecretNotFound"
        assert f"Secret {kube_ns.namespace}/late-tls (key {key}) does not exist" in cond["message"]
        poll(
            lambda n=name: "SecretNotFound" in event_reasons(kube_ns, n),
            timeout=30,
            message=f"a SecretNotFound event on {name}",
        )
    # Nothing was applied: no pod could have started (CreateContainerConfigError).
    assert kube_ns.get("deployment", "traces-collector") is None
    assert kube_ns.get("statefulset", "kv") is None
    assert kube_ns.list("configmaps", "app.kubernetes.io/instance=traces") == []

    # A Secret without the key is still not enough.
    kube_ns.apply(tls_secret(with_ca=False))
    poll(
        lambda: (
            "has no key ca.crt"
            in condition(kube_ns, "kvcluster", "kv", "SecretsReady").get("message", "")
        ),
        timeout=30,
        message="SecretsReady names the missing key",
    )
    # With the key both heal at once (the watch, not the 10-minute resync).
    kube_ns.apply(tls_secret())
    for kind, name in (("tracingpipeline", "traces"), ("kvcluster", "kv")):
        poll(
            lambda k=kind, n=name: condition(kube_ns, k, n, "SecretsReady").get("status") == "True",
            timeout=30,
            message=f"{kind}/{name} SecretsReady=True after the Secret appeared",
        )
    poll(
        lambda: (
            kube_ns.get("statefulset", "kv") is not None
            and kube_ns.get("deployment", "traces-collector") is not None
        ),
        timeout=30,
        message="StatefulSet and collector Deployment created",
    )
    healthy = checksum(kube_ns, "statefulset", "kv")

    # Deleting it later keeps the members on their last good configuration (nothing re-applied).
    kube_ns.run("delete", "secret", "late-tls")
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "False")
    assert checksum(kube_ns, "statefulset", "kv") == healthy
    kube_ns.apply(tls_secret())
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "True")
    poll(
        lambda: checksum(kube_ns, "statefulset", "kv") != healthy,
        timeout=30,
        message="the members roll onto the re-created Secret",
    )


def decoded_token(kube: Any, name: str) -> str:
    secret = kube.get("secret", name)
    assert secret is not None
    return base64.b64decode(secret["data"]["token"]).decode()


@SLOW_RESYNC
def test_the_operator_creates_the_token_secret_once(operator: Any, kube_ns: Any, poll: Any) -> None:
    kube_ns.apply(pipeline({"enabled": True}), kvcluster())
    poll(
        lambda: kube_ns.get("secret", "traces-otlp-token") is not None,
        timeout=TIMEOUT,
        message="the generated token Secret",
    )
    secret = kube_ns.get("secret", "traces-otlp-token") or {}
    owner = kube_ns.get("tracingpipeline", "traces") or {}
    assert [(r["kind"], r["uid"]) for r in secret["metadata"]["ownerReferences"]] == [
        ("TracingPipeline", owner["metadata"]["uid"])
    ]
    labels = secret["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "kvtrace-operator"
    assert (
        labels["app.kubernetes.io/part-of"] == "kvtrace"
        and labels["app.kubernetes.io/instance"] == "traces"
    )
    token = decoded_token(kube_ns, "traces-otlp-token")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token), "32 random bytes, URL-safe base64"
    # The collector's token file is the token set (the pipeline's token among the consumers');
    # the members read their cluster's own token, created with the cluster, without a warning.
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "True")
    assert "SecretNotFound" not in event_reasons(kube_ns, "kv")
    poll(
        lambda: kube_ns.get("statefulset", "kv") is not None,
        timeout=TIMEOUT,
        message="StatefulSet kv",
    )
    sts = kube_ns.get("statefulset", "kv") or {}
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "KVTRACE_OTLP_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "kv-otlp-client-token", "key": "token"}},
    } in env
    member_token = decoded_token(kube_ns, "kv-otlp-client-token")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", member_token) and member_token != token
    member_secret = kube_ns.get("secret", "kv-otlp-client-token") or {}
    assert [r["kind"] for r in member_secret["metadata"]["ownerReferences"]] == ["KVCluster"]
    collector = kube_ns.get("deployment", "traces-collector") or {}
    volumes = collector["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("secret", {}).get("secretName") == "traces-otlp-tokens" for v in volumes)
    poll(
        lambda: (
            f"{token} pipeline\n" in token_set(kube_ns)
            and f"{member_token} KVCluster/kv\n" in token_set(kube_ns)
        ),
        timeout=30,
        message="the token set holds the pipeline's and the cluster's tokens",
    )

    # Reconciles (a spec change) never rotate it.
    version = secret["metadata"]["resourceVersion"]
    kube_ns.run(
        "patch",
        "tracingpipeline",
        "traces",
        "--type=merge",
        "-p",
        '{"spec": {"sampling": {"ratio": 0.5}}}',
    )
    poll(
        lambda: (
            (kube_ns.get("tracingpipeline", "traces") or {})
            .get("status", {})
            .get("observedGeneration")
            == (kube_ns.get("tracingpipeline", "traces") or {})["metadata"]["generation"]
        ),
        timeout=TIMEOUT,
        message="the pipeline change reconciled",
    )
    assert (kube_ns.get("secret", "traces-otlp-token") or {})["metadata"][
        "resourceVersion"
    ] == version
    assert decoded_token(kube_ns, "traces-otlp-token") == token

    # The members follow the new ratio on a reconcile of their own, requested by the
    # pipeline's (coalesced, after it): wait for it before taking their checksum.
    def sampler_arg() -> str | None:
        sts = kube_ns.get("statefulset", "kv") or {}
        env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        return next((e.get("value") for e in env if e["name"] == "OTEL_TRACES_SAMPLER_ARG"), None)

    poll(lambda: sampler_arg() == "0.5", timeout=TIMEOUT, message="the members at ratio 0.5")

    # Deleted by hand: a new one with a new token in the token set; the members keep theirs.
    members = checksum(kube_ns, "statefulset", "kv")
    kube_ns.run("delete", "secret", "traces-otlp-token")
    poll(
        lambda: kube_ns.get("secret", "traces-otlp-token") is not None,
        timeout=30,
        message="the token Secret re-created",
    )
    rotated = decoded_token(kube_ns, "traces-otlp-token")
    assert rotated != token
    poll(
        lambda: f"{rotated} pipeline\n" in token_set(kube_ns) and token not in token_set(kube_ns),
        timeout=30,
        message="the token set holds the new pipeline token, not the old one",
    )
    assert checksum(kube_ns, "statefulset", "kv") == members
    # The cluster's token deleted by hand: a new one, and the members roll onto it.
    kube_ns.run("delete", "secret", "kv-otlp-client-token")
    poll(
        lambda: kube_ns.get("secret", "kv-otlp-client-token") is not None,
        timeout=30,
        message="the cluster's token Secret re-created",
    )
    assert decoded_token(kube_ns, "kv-otlp-client-token") != member_token
    poll(
        lambda: checksum(kube_ns, "statefulset", "kv") != members,
        timeout=30,
        message="the members roll onto the new token",
    )
    # Switching to a Secret of one's own removes the generated one (owned, no longer rendered).
    kube_ns.apply(
        token_secret("mine", secrets.token_urlsafe(32)),
        pipeline({"enabled": True, "tokenSecretRef": {"name": "mine", "key": "token"}}),
    )
    poll(
        lambda: kube_ns.get("secret", "traces-otlp-token") is None,
        timeout=30,
        message="the generated Secret pruned",
    )
    assert kube_ns.get("secret", "mine") is not None  # the user's Secret stays


def test_a_token_secret_applied_without_data_gets_its_token(
    operator: Any, kube_ns: Any, poll: Any
) -> None:
    """GitOps with `kvtrace render` output: the generated Secret arrives without data (the
    render is pure); the operator adds the token once and both sides use it."""
    pipe = pipeline({"enabled": True})
    rendered = next(
        obj
        for obj in render_pipeline(
            {**pipe, "metadata": {"name": "traces", "namespace": kube_ns.namespace}}
        )
        if obj["kind"] == "Secret" and obj["metadata"]["name"] == "traces-otlp-token"
    )
    assert "data" not in rendered
    kube_ns.apply(rendered, pipe, kvcluster())
    poll(
        lambda: "token" in ((kube_ns.get("secret", "traces-otlp-token") or {}).get("data") or {}),
        timeout=TIMEOUT,
        message="the operator filled the token in",
    )
    token = decoded_token(kube_ns, "traces-otlp-token")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token)
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "True")
    kube_ns.apply(rendered)  # applied again as GitOps would: the token stays
    kube_ns.run(
        "patch",
        "tracingpipeline",
        "traces",
        "--type=merge",
        "-p",
        '{"spec": {"sampling": {"ratio": 0.5}}}',
    )
    poll(
        lambda: (
            (kube_ns.get("tracingpipeline", "traces") or {})
            .get("status", {})
            .get("observedGeneration")
            == (kube_ns.get("tracingpipeline", "traces") or {})["metadata"]["generation"]
        ),
        timeout=TIMEOUT,
        message="the pipeline change reconciled",
    )
    assert decoded_token(kube_ns, "traces-otlp-token") == token
