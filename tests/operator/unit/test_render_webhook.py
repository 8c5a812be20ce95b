"""render/webhook.py: the injection webhook's MutatingWebhookConfiguration: scoped to
the watched namespaces (or every one but the system namespaces and the operator's), never the
operator's children, only annotated objects (CEL), failurePolicy Ignore; and the operator's
webhook flags, refused with the flag named."""

from __future__ import annotations

import argparse

import pytest

from kvtrace_operator import cli
from kvtrace_operator.render import webhook

pytestmark = pytest.mark.unit

URL = {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}
SERVICE = {
    "service": {"namespace": "kvtrace-system", "name": "kvtrace-operator-webhook", "port": 443},
    "caBundle": "Q0E=",
}


def test_pod_and_workload_hooks_fail_open_and_only_see_annotated_objects() -> None:
    config = webhook.webhook_configuration(URL, ["shop"])
    assert config["kind"] == "MutatingWebhookConfiguration"
    assert config["metadata"]["name"] == "kvtrace-injection-shop"
    pods, workloads = config["webhooks"]
    for hook in (pods, workloads):
        assert hook["failurePolicy"] == "Ignore"
        assert hook["sideEffects"] == "NoneOnDryRun"
        assert hook["timeoutSeconds"] <= 10
        assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]} in hook[
            "namespaceSelector"
        ]["matchExpressions"]
        assert {
            "key": "kvtrace.dev/injection",
            "operator": "NotIn",
            "values": ["disabled"],
        } in hook["namespaceSelector"]["matchExpressions"]
        assert {
            "key": "app.kubernetes.io/managed-by",
            "operator": "NotIn",
            "values": ["kvtrace-operator"],
        } in hook["objectSelector"]["matchExpressions"]
    assert pods["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert workloads["rules"][0]["resources"] == ["deployments", "statefulsets", "daemonsets"]
    assert pods["clientConfig"] == {"url": "https://127.0.0.1:9443/inject-pod", "caBundle": "Q0E="}
    assert workloads["clientConfig"]["url"].endswith("/inject-workload")
    assert (
        "object.metadata.annotations.exists(k, k.startsWith('kvtrace.'))"
        in pods["matchConditions"][0]["expression"]
    )
    assert (
        "object.spec.template.metadata.annotations" in workloads["matchConditions"][0]["expression"]
    )


def test_cluster_wide_excludes_system_namespaces_and_the_operators() -> None:
    config = webhook.webhook_configuration(SERVICE, [], operator_namespace="kvtrace-system")
    assert config["metadata"]["name"] == "kvtrace-injection"
    (expression,) = [
        e
        for e in config["webhooks"][0]["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert expression == {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-node-lease", "kube-public", "kube-system", "kvtrace-system"],
    }
    assert config["webhooks"][0]["clientConfig"]["service"] == {
        "namespace": "kvtrace-system",
        "name": "kvtrace-operator-webhook",
        "port": 443,
        "path": "/inject-pod",
    }
    assert webhook.webhook_configuration(SERVICE, []) == webhook.webhook_configuration(SERVICE, [])


def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["operator", "run", *flags])


def test_webhook_flags(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse()
    assert (
        args.webhook_port == 0 and args.webhook_host == "127.0.0.1" and args.webhook_service is None
    )
    args = parse(
        "--webhook-port", "9443", "--webhook-service", "kvtrace-system/kvtrace-operator-webhook"
    )
    assert args.webhook_port == 9443
    assert args.webhook_service == ("kvtrace-system", "kvtrace-operator-webhook")
    for flags, says in (
        (("--webhook-port", "http"), "expected a port from 1 to 65535"),
        (("--webhook-port", "70000"), "expected a port"),
        (("--webhook-service", "nameonly"), "expected NAMESPACE/NAME"),
    ):
        with pytest.raises(SystemExit):
            parse(*flags)
        err = capsys.readouterr().err
        assert says in err and flags[0] in err
