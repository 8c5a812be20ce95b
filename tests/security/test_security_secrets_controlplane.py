"""Secrets the operator's workloads use, on the real local cluster (issue 8):

- a changed token Secret rolls the KV members (their pod-template checksum changes), an
  unchanged one does not, and the collector (which re-reads its token file) never rolls;
- a missing Secret sets ``SecretsReady=False`` (reason SecretNotFound, naming
  namespace/name/key) with an event, applies nothing, and creating it heals both kinds at
  once: the operator watches Secrets (the resync timer is 10 minutes here);
- without ``tokenSecretRef`` the operator creates ``NAME-otlp-token`` once (owner reference,
  labels, >= 32 random bytes), keeps it across reconciles, and re-creates a deleted one; a
  KVCluster created with the pipeline waits for it (SecretPending) without a warning.
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
    return {"apiVersion": "kvtrace.dev/v1alpha1", "kind": "TracingPipeline", "metadata": {"name": name},
            "spec": {"sampling": {"mode": "head", "ratio": 1}, "security": {"auth": auth}}}


def kvcluster(name: str = "kv", replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": "kvtrace.dev/v1alpha1", "kind": "KVCluster", "metadata": {"name": name},
            "spec": {"replicas": replicas, "replicationFactor": 1,
                     "tracing": {"pipelineRef": {"name": "traces"}}}}


def token_secret(name: str, token: str, key: str = "token") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
            "stringData": {key: token}}


def checksum(kube: Any, kind: str, name: str) -> str | None:
    obj = kube.get(kind, name)
    return None if obj is None else str(obj["spec"]["template"]["metadata"]["annotations"][CHECKSUM])


def condition(kube: Any, kind: str, name: str, type_: str) -> dict[str, Any]:
    return kube.condition(kind, name, type_) or {}


def event_reasons(kube: Any, name: str) -> set[str]:
    return {e["reason"] for e in kube.list("events") if e["involvedObject"]["name"] == name}


def wait_secrets_ready(kube: Any, poll: Any, kind: str, name: str, status: str) -> dict[str, Any]:
    poll(lambda: condition(kube, kind, name, "SecretsReady").get("status") == status, timeout=TIMEOUT,
         message=f"{kind}/{name} SecretsReady={status}: {condition(kube, kind, name, 'SecretsReady')}")
    return condition(kube, kind, name, "SecretsReady")


@SLOW_RESYNC
def test_a_changed_token_secret_rolls_the_members_and_nothing_else(operator: Any, kube_ns: Any,
                                                                   poll: Any) -> None:
    kube_ns.apply(token_secret("otlp-token", secrets.token_urlsafe(32)))
    kube_ns.apply(pipeline({"enabled": True, "tokenSecretRef": {"name": "otlp-token", "key": "token"}}),
                  kvcluster())
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "True")
    poll(lambda: checksum(kube_ns, "statefulset", "kv") is not None, timeout=TIMEOUT, message="StatefulSet kv")
    members, collector = checksum(kube_ns, "statefulset", "kv"), checksum(kube_ns, "deployment", "traces-collector")
    assert collector is not None

    # A Secret nobody references changes: nothing rolls.
    kube_ns.apply(token_secret("unrelated", secrets.token_urlsafe(32)))
    # The referenced one changes: the members roll (env is read at start), the collector does not.
    kube_ns.apply(token_secret("otlp-token", secrets.token_urlsafe(32)))
    poll(lambda: checksum(kube_ns, "statefulset", "kv") != members, timeout=30,
         message="the StatefulSet's template checksum changes after the token Secret changed")
    rolled = checksum(kube_ns, "statefulset", "kv")
    assert checksum(kube_ns, "deployment", "traces-collector") == collector

    # A reconcile with the Secret unchanged (scaling rewrites the peers file only): no roll.
    kube_ns.run("patch", "kvcluster", "kv", "--type=merge", "-p", '{"spec": {"replicas": 2}}')
    poll(lambda: (kube_ns.get("statefulset", "kv") or {}).get("spec", {}).get("replicas") == 2,
         timeout=TIMEOUT, message="StatefulSet scaled to 2")
    assert checksum(kube_ns, "statefulset", "kv") == rolled
    assert checksum(kube_ns, "deployment", "traces-collector") == collector
    # The checksum is a digest: no Secret value in any annotation.
    assert re.fullmatch(r"[0-9a-f]{64}", rolled or "")


@SLOW_RESYNC
def test_a_missing_secret_is_a_condition_and_creating_it_heals(operator: Any, kube_ns: Any, poll: Any) -> None:
    ref = {"name": "late-token", "key": "token"}
    kube_ns.apply(pipeline({"enabled": True, "tokenSecretRef": ref}), kvcluster())
    for kind, name in (("tracingpipeline", "traces"), ("kvcluster", "kv")):
        cond = wait_secrets_ready(kube_ns, poll, kind, name, "False")
        assert cond["reason"] == "SecretNotFound"
        assert f"Secret {kube_ns.namespace}/late-token (key token) does not exist" in cond["message"]
        poll(lambda n=name: "SecretNotFound" in event_reasons(kube_ns, n), timeout=30,
             message=f"a SecretNotFound event on {name}")
    # Nothing was applied: no pod could have started (CreateContainerConfigError).
    assert kube_ns.get("deployment", "traces-collector") is None
    assert kube_ns.get("statefulset", "kv") is None
    assert kube_ns.list("configmaps", "app.kubernetes.io/instance=traces") == []

    # A Secret without the key is still not enough.
    kube_ns.apply(token_secret("late-token", secrets.token_urlsafe(32), key="other"))
    poll(lambda: "has no key token" in condition(kube_ns, "kvcluster", "kv", "SecretsReady").get("message", ""),
         timeout=30, message="SecretsReady names the missing key")
    # With the key both heal at once (the watch, not the 10-minute resync).
    kube_ns.apply(token_secret("late-token", secrets.token_urlsafe(32)))
    for kind, name in (("tracingpipeline", "traces"), ("kvcluster", "kv")):
        poll(lambda k=kind, n=name: condition(kube_ns, k, n, "SecretsReady").get("status") == "True",
             timeout=30, message=f"{kind}/{name} SecretsReady=True after the Secret appeared")
    poll(lambda: kube_ns.get("statefulset", "kv") is not None and kube_ns.get("deployment", "traces-collector")
         is not None, timeout=30, message="StatefulSet and collector Deployment created")
    healthy = checksum(kube_ns, "statefulset", "kv")

    # Deleting it later keeps the members on their last good configuration (nothing re-applied).
    kube_ns.run("delete", "secret", "late-token")
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "False")
    assert checksum(kube_ns, "statefulset", "kv") == healthy
    kube_ns.apply(token_secret("late-token", secrets.token_urlsafe(32)))
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "True")
    poll(lambda: checksum(kube_ns, "statefulset", "kv") != healthy, timeout=30,
         message="the members roll onto the re-created Secret")


def decoded_token(kube: Any, name: str) -> str:
    secret = kube.get("secret", name)
    assert secret is not None
    return base64.b64decode(secret["data"]["token"]).decode()


@SLOW_RESYNC
def test_the_operator_creates_the_token_secret_once(operator: Any, kube_ns: Any, poll: Any) -> None:
    kube_ns.apply(pipeline({"enabled": True}), kvcluster())
    poll(lambda: kube_ns.get("secret", "traces-otlp-token") is not None, timeout=TIMEOUT,
         message="the generated token Secret")
    secret = kube_ns.get("secret", "traces-otlp-token") or {}
    owner = kube_ns.get("tracingpipeline", "traces") or {}
    assert [(r["kind"], r["uid"]) for r in secret["metadata"]["ownerReferences"]] == \
        [("TracingPipeline", owner["metadata"]["uid"])]
    labels = secret["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "kvtrace-operator"
    assert labels["app.kubernetes.io/part-of"] == "kvtrace" and labels["app.kubernetes.io/instance"] == "traces"
    token = decoded_token(kube_ns, "traces-otlp-token")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token), "32 random bytes, URL-safe base64"
    # Both sides use it: the collector's token file and the members' environment. The cluster,
    # created with its pipeline, waited for the Secret (SecretPending) without a warning.
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "True")
    assert "SecretNotFound" not in event_reasons(kube_ns, "kv")
    poll(lambda: kube_ns.get("statefulset", "kv") is not None, timeout=TIMEOUT, message="StatefulSet kv")
    sts = kube_ns.get("statefulset", "kv") or {}
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KVTRACE_OTLP_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "traces-otlp-token", "key": "token"}}} in env
    collector = kube_ns.get("deployment", "traces-collector") or {}
    volumes = collector["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("secret", {}).get("secretName") == "traces-otlp-token" for v in volumes)

    # Reconciles (a spec change) never rotate it.
    version = secret["metadata"]["resourceVersion"]
    kube_ns.run("patch", "tracingpipeline", "traces", "--type=merge", "-p", '{"spec": {"sampling": {"ratio": 0.5}}}')
    poll(lambda: (kube_ns.get("tracingpipeline", "traces") or {}).get("status", {}).get("observedGeneration")
         == (kube_ns.get("tracingpipeline", "traces") or {})["metadata"]["generation"], timeout=TIMEOUT,
         message="the pipeline change reconciled")
    assert (kube_ns.get("secret", "traces-otlp-token") or {})["metadata"]["resourceVersion"] == version
    assert decoded_token(kube_ns, "traces-otlp-token") == token

    # Deleted by hand: a new one with a new token, and the members roll onto it.
    members = checksum(kube_ns, "statefulset", "kv")
    kube_ns.run("delete", "secret", "traces-otlp-token")
    poll(lambda: kube_ns.get("secret", "traces-otlp-token") is not None, timeout=30,
         message="the token Secret re-created")
    assert decoded_token(kube_ns, "traces-otlp-token") != token
    poll(lambda: checksum(kube_ns, "statefulset", "kv") != members, timeout=30,
         message="the members roll onto the new token")
    # Switching to a Secret of one's own removes the generated one (owned, no longer rendered).
    kube_ns.apply(token_secret("mine", secrets.token_urlsafe(32)),
                  pipeline({"enabled": True, "tokenSecretRef": {"name": "mine", "key": "token"}}))
    poll(lambda: kube_ns.get("secret", "traces-otlp-token") is None, timeout=30,
         message="the generated Secret pruned")
    assert kube_ns.get("secret", "mine") is not None  # the user's Secret stays


def test_a_token_secret_applied_without_data_gets_its_token(operator: Any, kube_ns: Any, poll: Any) -> None:
    """GitOps with `kvtrace render` output: the generated Secret arrives without data (the
    render is pure); the operator adds the token once and both sides use it."""
    pipe = pipeline({"enabled": True})
    rendered = next(obj for obj in render_pipeline({**pipe, "metadata": {"name": "traces",
                                                                         "namespace": kube_ns.namespace}})
                    if obj["kind"] == "Secret")
    assert "data" not in rendered
    kube_ns.apply(rendered, pipe, kvcluster())
    poll(lambda: "token" in ((kube_ns.get("secret", "traces-otlp-token") or {}).get("data") or {}),
         timeout=TIMEOUT, message="the operator filled the token in")
    token = decoded_token(kube_ns, "traces-otlp-token")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token)
    wait_secrets_ready(kube_ns, poll, "kvcluster", "kv", "True")
    kube_ns.apply(rendered)  # applied again as GitOps would: the token stays
    kube_ns.run("patch", "tracingpipeline", "traces", "--type=merge", "-p", '{"spec": {"sampling": {"ratio": 0.5}}}')
    poll(lambda: (kube_ns.get("tracingpipeline", "traces") or {}).get("status", {}).get("observedGeneration")
         == (kube_ns.get("tracingpipeline", "traces") or {})["metadata"]["generation"], timeout=TIMEOUT,
         message="the pipeline change reconciled")
    assert decoded_token(kube_ns, "traces-otlp-token") == token
