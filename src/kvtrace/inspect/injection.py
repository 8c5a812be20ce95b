"""Injection at a glance, for ``kvtrace status`` and ``kvtrace doctor``: per namespace, the
workloads whose pods ask for ``kvtrace.dev/inject`` (or carry a misspelled kvtrace annotation),
and for each running pod whether it is injected, and why not.

:func:`workload_views` is pure (objects as the API server returns them in, plain data out);
:func:`gather` is the read-only I/O edge. The reasons, in the order they are looked for:
the webhook's own ``kvtrace.dev/injection-error`` on the pod; a malformed or misspelled
annotation; no MutatingWebhookConfiguration covering the namespace (the operator runs without
``--webhook-port``); the pipeline missing or not Ready; the pod created before the webhook was
registered; otherwise the webhook did not answer when the pod was created (the operator was
stopped: ``failurePolicy: Ignore`` let the pod through). Injected pods are checked too: the
pipeline changed since (``stale``) and the workload's token Secret missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import kvtrace_operator.render.injection as injection
from kvtrace_operator.render import webhook as webhook_render
from kvtrace_operator.render.consumer_tokens import TOKEN_KEY
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.security import auth
from kvtrace_operator.spec import parse_pipeline

UNKNOWN_WEBHOOK: Mapping[str, Any] = {"metadata": {}}  # not permitted to read the configurations


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _ready(pipeline: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pipeline.get("status") or {}).get("conditions") or ()
    )


def covering_webhook(
    configs: Iterable[Mapping[str, Any]], namespace: str
) -> Mapping[str, Any] | None:
    """The operator's MutatingWebhookConfiguration whose pod hook selects ``namespace``."""
    for config in configs:
        for hook in config.get("webhooks") or ():
            if hook.get("name") != webhook_render.POD_HOOK:
                continue
            for expression in (hook.get("namespaceSelector") or {}).get("matchExpressions") or ():
                if expression.get("key") != webhook_render.NAMESPACE_LABEL:
                    continue
                inside = namespace in (expression.get("values") or ())
                if (expression.get("operator") == "In") == inside:
                    return config
    return None


def pod_state(
    pod: Mapping[str, Any],
    *,
    pipelines: Mapping[tuple[str, str], Mapping[str, Any]],
    webhook: Mapping[str, Any] | None,
    secrets: Mapping[str, Mapping[str, Any]],
) -> tuple[bool, str]:
    """(injected, problem) of one pod asking for injection; problem empty when all is well."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    namespace = str(meta.get("namespace", ""))
    if annotations.get(injection.INJECTION_ERROR):
        return False, str(annotations[injection.INJECTION_ERROR])
    try:
        request = injection.parse_request(annotations, namespace)
    except SpecError as exc:
        return False, f"annotation: {exc}"
    assert request is not None
    pipeline = pipelines.get((request.namespace, request.pipeline))
    if annotations.get(injection.INJECTED):
        return True, _injected_problem(pod, request, pipeline, secrets)
    if webhook is None:
        return False, (
            f"no injection webhook covers namespace {namespace} (run the operator with "
            "--webhook-port; the chart does)"
        )
    if pipeline is None:
        return False, f"TracingPipeline {request.ref} not found"
    created, registered = (
        _time(meta.get("creationTimestamp")),
        _time((webhook.get("metadata") or {}).get("creationTimestamp")),
    )
    if created and registered and created < registered:
        return (
            False,
            "created before the injection webhook was registered: delete the pod to re-create it",
        )
    not_ready = "" if _ready(pipeline) else f" (TracingPipeline {request.ref} is not Ready)"
    return False, (
        "the webhook did not answer when the pod was created (operator stopped or "
        f"unreachable; failurePolicy Ignore let it through){not_ready}: delete the pod once "
        "the operator runs"
    )


def _injected_problem(
    pod: Mapping[str, Any],
    request: injection.Request,
    pipeline: Mapping[str, Any] | None,
    secrets: Mapping[str, Mapping[str, Any]],
) -> str:
    if pipeline is None:
        return f"TracingPipeline {request.ref} no longer exists"
    workload = injection.owning_workload(dict(pod))
    secret = secrets.get(workload.secret)
    if auth(parse_pipeline(pipeline.get("spec"))) and (
        secret is None or TOKEN_KEY not in (secret.get("data") or {})
    ):
        return f"token missing: Secret {workload.secret} (key {TOKEN_KEY}) does not exist"
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(injection.INJECTED_CHECKSUM) != injection.config_checksum(
        dict(pipeline), request, injection.agent_images(dict(pod))
    ):
        return (
            f"stale: TracingPipeline {request.ref} changed since the pod was injected (restart it, or "
            f'annotate the workload {injection.RESTART_ON_CHANGE}: "true")'
        )
    return ""


def asks(pod: Mapping[str, Any]) -> bool:
    """Whether a pod asks for injection, was refused it, or carries an annotation the webhook
    takes for a misspelled request."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if injection.INJECTION_ERROR in annotations:
        return True
    try:
        return injection.parse_request(annotations, str(meta.get("namespace", ""))) is not None
    except SpecError:
        return True


def named_namespaces(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """The pods' namespaces and those their ``NAMESPACE/PIPELINE`` annotations name."""
    found = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        found.add(str(meta.get("namespace", "")))
        try:
            request = injection.parse_request(
                meta.get("annotations"), str(meta.get("namespace", ""))
            )
        except SpecError:
            continue
        if request is not None:
            found.add(request.namespace)
    return sorted(found)


def workload_views(
    pods: Sequence[Mapping[str, Any]],
    pipelines: Sequence[Mapping[str, Any]],
    configs: Sequence[Mapping[str, Any]] | None,
    secrets: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One entry per workload asking for injection: its pods, injected or not, and why
    (``configs`` None: the webhook configurations could not be read, so not judged)."""
    by_key = {
        (str(p["metadata"].get("namespace")), str(p["metadata"]["name"])): p for p in pipelines
    }
    secrets_by_ns: dict[str, dict[str, Mapping[str, Any]]] = {}
    for secret in secrets:
        secrets_by_ns.setdefault(str(secret["metadata"].get("namespace")), {})[
            secret["metadata"]["name"]
        ] = secret
    views: dict[tuple[str, str], dict[str, Any]] = {}
    for pod in sorted(
        pods, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"].get("name", ""))
    ):
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") or not asks(pod):
            continue
        namespace = str(meta.get("namespace", ""))
        workload = injection.owning_workload(dict(pod))
        webhook = UNKNOWN_WEBHOOK if configs is None else covering_webhook(configs, namespace)
        injected, problem = pod_state(
            pod, pipelines=by_key, webhook=webhook, secrets=secrets_by_ns.get(namespace, {})
        )
        view = views.setdefault(
            (namespace, workload.label),
            {
                "namespace": namespace,
                "workload": workload.label,
                "pipeline": (meta.get("annotations") or {}).get(injection.INJECT, "-"),
                "pods": [],
            },
        )
        view["pods"].append(
            {"name": meta.get("name", ""), "injected": injected, "problem": problem}
        )
    return list(views.values())


def render_lines(views: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table ``kvtrace status`` prints (empty when no workload asks for injection)."""
    if not views:
        return []
    rows = [("NAMESPACE", "WORKLOAD", "PIPELINE", "POD", "INJECTED", "PROBLEM")]
    for view in views:
        for pod in view["pods"]:
            rows.append(
                (
                    view["namespace"],
                    view["workload"],
                    view["pipeline"],
                    pod["name"],
                    "yes" if pod["injected"] else "NO",
                    pod["problem"] or "-",
                )
            )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["Injection (kvtrace.dev/inject):"] + [
        "  "
        + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths))
        + "  "
        + str(row[-1])
        for row in rows
    ]


def gather(kube: Any, namespace: str | None) -> list[dict[str, Any]]:
    """Read what :func:`workload_views` needs (read-only) for ``namespace`` (None: all)."""
    pods = [p for p in kube.list("Pod", namespace) if asks(p)]
    if not pods:
        return []
    configs = kube.list_global(
        "MutatingWebhookConfiguration", {"app.kubernetes.io/component": "injection"}
    )
    pipelines = [p for ns in named_namespaces(pods) for p in kube.list("TracingPipeline", ns)]
    namespaces = sorted({str(p["metadata"].get("namespace")) for p in pods})
    secrets = [
        s
        for ns in namespaces
        for s in kube.list("Secret", ns, {"app.kubernetes.io/component": "otlp-workload-token"})
    ]
    return workload_views(pods, pipelines, configs, secrets)
