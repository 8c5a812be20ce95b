"""Secrets never leave their Secret (docs/security.md): the operator runs at DEBUG with canary tokens
(the user's pipeline token and a declared consumer's, tokens it generates itself: a pipeline's,
each KVCluster's) while reconciles create, update, follow Secret changes (the collector's token
set rewritten from them, a member token changed), a missing Secret and a deleted consumer;
afterwards no canary (plain or base64) is in the operator's log, in any event, status,
annotation, ConfigMap (the rendered collector config included) or any other object of the
namespace but the Secrets themselves. The operator reads token values now (to write the token
set), so this covers that path too."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0
EVERYTHING_BUT_SECRETS = (
    "configmaps,services,serviceaccounts,statefulsets,deployments,poddisruptionbudgets,"
    "networkpolicies,pods,events,kvclusters.kvtrace.dev,tracingpipelines.kvtrace.dev"
)


def canary() -> str:
    return f"kvtcanary{secrets.token_hex(16)}"


def token_secret(value: str, name: str = "otlp-token") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"token": value},
    }


def decoded(kube: Any, name: str, key: str = "token") -> str:
    return base64.b64decode(
        ((kube.get("secret", name) or {}).get("data") or {}).get(key, "")
    ).decode()


def tokens_ready(kube: Any) -> str:
    return str((kube.condition("tracingpipeline", "traces", "TokensReady") or {}).get("status"))


def pipeline(name: str, auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": name},
        "spec": {"security": {"auth": auth}},
    }


def kvcluster(name: str, pipeline_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "replicationFactor": 1,
            "tracing": {"pipelineRef": {"name": pipeline_name}},
        },
    }


def secrets_ready(kube: Any, kind: str, name: str) -> str:
    return str((kube.condition(kind, name, "SecretsReady") or {}).get("status"))


def checksum(kube: Any) -> str | None:
    sts = kube.get("statefulset", "kv")
    return (
        None
        if sts is None
        else str(sts["spec"]["template"]["metadata"]["annotations"]["kvtrace.dev/config-checksum"])
    )


@pytest.mark.operator_args("--verbose")
def test_canary_tokens_reach_no_log_event_status_annotation_or_configmap(
    operator: Any, kube_ns: Any, poll: Any
) -> None:
    first, second, app, member = canary(), canary(), canary(), canary()
    ref = {
        "enabled": True,
        "tokenSecretRef": {"name": "otlp-token", "key": "token"},
        "consumers": [{"name": "app", "tokenSecretRef": {"name": "app-token", "key": "token"}}],
    }
    kube_ns.apply(
        token_secret(first),
        token_secret(app, "app-token"),
        pipeline("traces", ref),
        kvcluster("kv", "traces"),
        pipeline("gen", {"enabled": True}),
        kvcluster("kvgen", "gen"),
    )
    for kind, name in (("tracingpipeline", "traces"), ("kvcluster", "kv"), ("kvcluster", "kvgen")):
        poll(
            lambda k=kind, n=name: secrets_ready(kube_ns, k, n) == "True",
            timeout=TIMEOUT,
            message=f"{kind}/{name} SecretsReady=True",
        )
    poll(lambda: checksum(kube_ns) is not None, timeout=TIMEOUT, message="StatefulSet kv")
    poll(
        lambda: all(
            t in decoded(kube_ns, "traces-otlp-tokens", "tokens")
            for t in (first, app, decoded(kube_ns, "kv-otlp-client-token"))
            if t
        ),
        timeout=TIMEOUT,
        message="the token set holds the pipeline's, the consumer's and the cluster's tokens",
    )
    generated = [
        decoded(kube_ns, name)
        for name in ("gen-otlp-token", "kv-otlp-client-token", "kvgen-otlp-client-token")
    ]
    assert all(generated)
    canaries = [first, second, app, member, *generated]

    # An update of the pipeline; the pipeline's token changes (the token set follows); a member
    # token changed by hand (the members roll); a missing Secret, healed; a consumer deleted.
    kube_ns.run(
        "patch",
        "tracingpipeline",
        "traces",
        "--type=merge",
        "-p",
        '{"spec": {"sampling": {"ratio": 0.5}}}',
    )
    kube_ns.apply(token_secret(second))
    poll(
        lambda: second in decoded(kube_ns, "traces-otlp-tokens", "tokens"),
        timeout=TIMEOUT,
        message="the token set follows the changed pipeline token",
    )
    before = checksum(kube_ns)
    kube_ns.apply(token_secret(member, "kv-otlp-client-token"))
    poll(
        lambda: checksum(kube_ns) != before,
        timeout=TIMEOUT,
        message="the members roll on their token's change",
    )
    missing = {
        "spec": {"security": {"auth": {"tokenSecretRef": {"name": "absent", "key": "token"}}}}
    }
    kube_ns.run("patch", "tracingpipeline", "traces", "--type=merge", "-p", json.dumps(missing))
    poll(
        lambda: tokens_ready(kube_ns) == "False",
        timeout=TIMEOUT,
        message="TokensReady=False with the pipeline's token Secret missing",
    )
    back = {
        "spec": {"security": {"auth": {"tokenSecretRef": {"name": "otlp-token", "key": "token"}}}}
    }
    kube_ns.run("patch", "tracingpipeline", "traces", "--type=merge", "-p", json.dumps(back))
    poll(lambda: tokens_ready(kube_ns) == "True", timeout=TIMEOUT, message="TokensReady=True again")
    kube_ns.run("delete", "kvcluster", "kvgen", "--wait=false")
    poll(
        lambda: generated[2] not in decoded(kube_ns, "gen-otlp-tokens", "tokens"),
        timeout=TIMEOUT,
        message="the deleted cluster's token revoked",
    )

    log = operator.log()
    assert " DEBUG " in log, "the operator logged at DEBUG"
    objects = kube_ns.run("get", EVERYTHING_BUT_SECRETS, "-o", "json").stdout
    configmaps = kube_ns.list("configmaps")
    assert any("config.yaml" in (cm.get("data") or {}) for cm in configmaps), (
        "the rendered collector config"
    )
    for value in canaries:
        for form in (value, base64.b64encode(value.encode()).decode()):
            assert form not in log, "a token in the operator's log"
            assert form not in objects, (
                "a token in an event, status, annotation, ConfigMap or other object"
            )
