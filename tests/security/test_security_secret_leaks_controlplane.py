"""Secrets never leave their Secret (issue 8): the operator runs at DEBUG with canary tokens
(one of the user's, one it generates itself) while reconciles create, update, follow a Secret
change and a missing Secret; afterwards no canary (plain or base64) is in the operator's log,
in any event, status, annotation, ConfigMap (the rendered collector config included) or any
other object of the namespace but the Secrets themselves."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0
EVERYTHING_BUT_SECRETS = ("configmaps,services,serviceaccounts,statefulsets,deployments,poddisruptionbudgets,"
                          "networkpolicies,pods,events,kvclusters.kvtrace.dev,tracingpipelines.kvtrace.dev")


def canary() -> str:
    return f"kvtcanary{secrets.token_hex(16)}"


def token_secret(value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "otlp-token"}, "stringData": {"token": value}}


def pipeline(name: str, auth: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kvtrace.dev/v1alpha1", "kind": "TracingPipeline", "metadata": {"name": name},
            "spec": {"security": {"auth": auth}}}


def kvcluster(name: str, pipeline_name: str) -> dict[str, Any]:
    return {"apiVersion": "kvtrace.dev/v1alpha1", "kind": "KVCluster", "metadata": {"name": name},
            "spec": {"replicas": 1, "replicationFactor": 1, "tracing": {"pipelineRef": {"name": pipeline_name}}}}


def secrets_ready(kube: Any, kind: str, name: str) -> str:
    return str((kube.condition(kind, name, "SecretsReady") or {}).get("status"))


def checksum(kube: Any) -> str | None:
    sts = kube.get("statefulset", "kv")
    return None if sts is None else str(sts["spec"]["template"]["metadata"]["annotations"]["kvtrace.dev/config-checksum"])


@pytest.mark.operator_args("--verbose")
def test_canary_tokens_reach_no_log_event_status_annotation_or_configmap(operator: Any, kube_ns: Any,
                                                                         poll: Any) -> None:
    first, second = canary(), canary()
    ref = {"enabled": True, "tokenSecretRef": {"name": "otlp-token", "key": "token"}}
    kube_ns.apply(token_secret(first), pipeline("traces", ref), kvcluster("kv", "traces"),
                  pipeline("gen", {"enabled": True}), kvcluster("kvgen", "gen"))
    for kind, name in (("tracingpipeline", "traces"), ("kvcluster", "kv"), ("kvcluster", "kvgen")):
        poll(lambda k=kind, n=name: secrets_ready(kube_ns, k, n) == "True", timeout=TIMEOUT,
             message=f"{kind}/{name} SecretsReady=True")
    poll(lambda: checksum(kube_ns) is not None, timeout=TIMEOUT, message="StatefulSet kv")
    generated = kube_ns.get("secret", "gen-otlp-token")
    assert generated is not None
    canaries = [first, second, base64.b64decode(generated["data"]["token"]).decode()]

    # An update of the pipeline, a Secret change (the members roll), a missing Secret, healed.
    kube_ns.run("patch", "tracingpipeline", "traces", "--type=merge", "-p", '{"spec": {"sampling": {"ratio": 0.5}}}')
    before = checksum(kube_ns)
    kube_ns.apply(token_secret(second))
    poll(lambda: checksum(kube_ns) != before, timeout=TIMEOUT, message="the members roll on the Secret change")
    missing = {"spec": {"security": {"auth": {"tokenSecretRef": {"name": "absent", "key": "token"}}}}}
    kube_ns.run("patch", "tracingpipeline", "traces", "--type=merge", "-p", json.dumps(missing))
    poll(lambda: secrets_ready(kube_ns, "kvcluster", "kv") == "False", timeout=TIMEOUT,
         message="SecretsReady=False with the Secret missing")
    back = {"spec": {"security": {"auth": {"tokenSecretRef": {"name": "otlp-token", "key": "token"}}}}}
    kube_ns.run("patch", "tracingpipeline", "traces", "--type=merge", "-p", json.dumps(back))
    poll(lambda: secrets_ready(kube_ns, "kvcluster", "kv") == "True", timeout=TIMEOUT,
         message="SecretsReady=True again")

    log = operator.log()
    assert " DEBUG " in log, "the operator logged at DEBUG"
    objects = kube_ns.run("get", EVERYTHING_BUT_SECRETS, "-o", "json").stdout
    configmaps = kube_ns.list("configmaps")
    assert any("config.yaml" in (cm.get("data") or {}) for cm in configmaps), "the rendered collector config"
    for value in canaries:
        for form in (value, base64.b64encode(value.encode()).decode()):
            assert form not in log, "a token in the operator's log"
            assert form not in objects, "a token in an event, status, annotation, ConfigMap or other object"
