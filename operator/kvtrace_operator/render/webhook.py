"""The MutatingWebhookConfiguration of injection (docs/injection.md): pure, like every render.

Two webhooks, both ``failurePolicy: Ignore`` (a stopped operator never blocks a pod: it is
created uninjected, and ``kvtrace doctor`` says why):

- ``pods.inject.kvtrace.dev``: pods on CREATE (handlers/webhook.py injects them);
- ``workloads.inject.kvtrace.dev``: Deployments, StatefulSets and DaemonSets on CREATE and
  UPDATE, to stamp the pod template of ``restart-on-change`` workloads with the checksum of
  their injected configuration (a later change of it rolls them).

Scoped three ways: namespaces (the watched ones, else all but the system namespaces and the
operator's own; a namespace labelled ``kvtrace.dev/injection: disabled`` opts out), objects
(never the operator's children nor the operator), and a CEL match condition (only objects
carrying a ``kvtrace.`` annotation reach the operator at all).

Never imports kopf or a Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvtrace.shared.api import MANAGED_BY
from kvtrace_operator.render.labels import PART_OF

API_VERSION = "admissionregistration.k8s.io/v1"
POD_HOOK = "pods.inject.kvtrace.dev"
WORKLOAD_HOOK = "workloads.inject.kvtrace.dev"
POD_HANDLER = "inject-pod"  # kopf handler ids: the last segment of each webhook's URL path
WORKLOAD_HANDLER = "inject-workload"
OPT_OUT_LABEL = "kvtrace.dev/injection"
OPT_OUT_VALUE = "disabled"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
TIMEOUT_SECONDS = 10
WORKLOAD_KINDS = ("deployments", "statefulsets", "daemonsets")


def configuration_name(namespaces: Sequence[str]) -> str:
    """One configuration per operator scope: cluster-wide, or the watched namespaces."""
    if not namespaces:
        return "kvtrace-injection"
    return f"kvtrace-injection-{'-'.join(sorted(set(namespaces)))}"[:253].rstrip("-.")


def namespace_selector(namespaces: Sequence[str], operator_namespace: str | None) -> dict[str, Any]:
    expressions: list[dict[str, Any]] = [
        {"key": OPT_OUT_LABEL, "operator": "NotIn", "values": [OPT_OUT_VALUE]}
    ]
    if namespaces:
        expressions.append(
            {"key": NAMESPACE_LABEL, "operator": "In", "values": sorted(set(namespaces))}
        )
    else:
        excluded = {*SYSTEM_NAMESPACES, *([operator_namespace] if operator_namespace else [])}
        expressions.append(
            {"key": NAMESPACE_LABEL, "operator": "NotIn", "values": sorted(excluded)}
        )
    return {"matchExpressions": expressions}


def object_selector() -> dict[str, Any]:
    """Never the operator's own children (KV members, collectors, Jaeger) nor the operator."""
    return {
        "matchExpressions": [
            {"key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": [MANAGED_BY]},
            {"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["kvtrace-operator"]},
        ]
    }


def _annotated(path: str) -> str:
    """CEL: the object at ``path`` carries an annotation whose key starts with ``kvtrace.``
    (misspelled ones included, so the webhook can report them)."""
    return f"has({path}.annotations) && {path}.annotations.exists(k, k.startsWith('kvtrace.'))"


def _client_config(base: dict[str, Any], handler: str) -> dict[str, Any]:
    """``base`` (``url`` or ``service``, and ``caBundle``) with the kopf handler's path."""
    config = dict(base)
    if "url" in config:
        config["url"] = f"{str(config['url']).rstrip('/')}/{handler}"
    if "service" in config:
        service = dict(config["service"])
        service["path"] = f"{service.get('path', '').rstrip('/')}/{handler}"
        config["service"] = service
    return config


def _webhook(
    name: str,
    handler: str,
    rules: list[dict[str, Any]],
    condition: str,
    client_config: dict[str, Any],
    namespaces: Sequence[str],
    operator_namespace: str | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "NoneOnDryRun",  # the workload's token Secret, never on a dry run
        "failurePolicy": "Ignore",
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "IfNeeded",  # containers added by later webhooks get injected too
        "timeoutSeconds": TIMEOUT_SECONDS,
        "clientConfig": _client_config(client_config, handler),
        "rules": rules,
        "namespaceSelector": namespace_selector(namespaces, operator_namespace),
        "objectSelector": object_selector(),
        "matchConditions": [{"name": "kvtrace-annotated", "expression": condition}],
    }


def webhook_configuration(
    client_config: dict[str, Any], namespaces: Sequence[str], operator_namespace: str | None = None
) -> dict[str, Any]:
    """The configuration the operator applies at start. ``client_config``: ``url`` (the
    operator reached directly, e.g. on loopback) or ``service`` (in a cluster), and the
    base64 ``caBundle`` of the operator's CA."""
    pods = [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    workloads = [
        {
            "apiGroups": ["apps"],
            "apiVersions": ["v1"],
            "resources": list(WORKLOAD_KINDS),
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": configuration_name(namespaces),
            "labels": {
                "app.kubernetes.io/name": "kvtrace-operator",
                "app.kubernetes.io/component": "injection",
                "app.kubernetes.io/part-of": PART_OF,
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "webhooks": [
            _webhook(
                POD_HOOK,
                POD_HANDLER,
                pods,
                _annotated("object.metadata"),
                client_config,
                namespaces,
                operator_namespace,
            ),
            _webhook(
                WORKLOAD_HOOK,
                WORKLOAD_HANDLER,
                workloads,
                _annotated("object.spec.template.metadata"),
                client_config,
                namespaces,
                operator_namespace,
            ),
        ],
    }
