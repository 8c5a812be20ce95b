"""kvtrace status / doctor on injection, pure: which pods ask for it, whether each is
injected, and every reason why not, in the order the doctor looks for them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kvtrace.inspect import doctor, status
from kvtrace.inspect import injection as view
from kvtrace_operator.render import injection
from kvtrace_operator.render import webhook as webhook_render

pytestmark = pytest.mark.unit

PIPELINE = {
    "apiVersion": "kvtrace.dev/v1alpha1",
    "kind": "TracingPipeline",
    "metadata": {"name": "traces", "namespace": "shop"},
    "spec": {},
    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
}
CONFIG = webhook_render.webhook_configuration(
    {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}, ["shop"]
)
CONFIG["metadata"]["creationTimestamp"] = "2026-12-07T10:00:00Z"
SECRET = {
    "metadata": {"name": "web-deployment-otlp-workload", "namespace": "shop"},
    "data": {"token": "dA=="},
}


def pod(
    name: str, annotations: dict[str, str], created: str = "2026-12-07T10:05:00Z"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "creationTimestamp": created,
            "labels": {"pod-template-hash": "5d9f"},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "kind": "ReplicaSet",
                    "name": "web-5d9f",
                    "controller": True,
                    "apiVersion": "apps/v1",
                    "uid": "u",
                }
            ],
        },
        "spec": {"containers": [{"name": "app", "image": "a"}]},
    }


ASKS = {"kvtrace.dev/inject": "traces"}
INJECTED = injection.inject(pod("web-5d9f-ok", ASKS), PIPELINE, injection.Request("shop", "traces"))


def states(
    *pods: dict[str, Any],
    pipelines: list[dict[str, Any]] | None = None,
    configs: tuple[dict[str, Any], ...] | list[dict[str, Any]] | None = (CONFIG,),
    secrets: list[dict[str, Any]] | None = None,
) -> dict[str, tuple[bool, str]]:
    views = view.workload_views(
        list(pods),
        [PIPELINE] if pipelines is None else pipelines,
        configs,
        [SECRET] if secrets is None else secrets,
    )
    return {p["name"]: (p["injected"], p["problem"]) for v in views for p in v["pods"]}


def test_injected_pod_is_fine_and_unasking_pods_are_not_listed() -> None:
    assert states(INJECTED, pod("other", {}), pod("kv", {"kvtrace.dev/config-checksum": "x"})) == {
        "web-5d9f-ok": (True, "")
    }


def test_every_reason_why_not() -> None:
    refused = pod(
        "refused", {**ASKS, "kvtrace.dev/injection-error": "TracingPipeline shop/traces not found"}
    )
    assert states(refused)["refused"] == (False, "TracingPipeline shop/traces not found")
    typo = states(pod("typo", {"kvtrace.dev/injct": "traces"}))["typo"]
    assert not typo[0] and "did you mean kvtrace.dev/inject?" in typo[1]
    assert (
        "no injection webhook covers namespace shop" in states(pod("p", ASKS), configs=[])["p"][1]
    )
    assert states(pod("p", ASKS), pipelines=[])["p"][1] == "TracingPipeline shop/traces not found"
    early = states(pod("p", ASKS, created="2026-12-07T09:00:00Z"))["p"][1]
    assert early.startswith("created before the injection webhook was registered")
    down = states(pod("p", ASKS))["p"][1]
    assert down.startswith("the webhook did not answer") and "not Ready" not in down
    unready = copy.deepcopy(PIPELINE)
    unready["status"]["conditions"][0]["status"] = "False"
    assert (
        "(TracingPipeline shop/traces is not Ready)"
        in states(pod("p", ASKS), pipelines=[unready])["p"][1]
    )
    # the webhook configurations could not be read: that reason is not claimed
    assert states(pod("p", ASKS), configs=None)["p"][1].startswith("the webhook did not answer")


def test_injected_pods_that_need_attention() -> None:
    assert states(INJECTED, secrets=[])["web-5d9f-ok"] == (
        True,
        "token missing: Secret web-deployment-otlp-workload (key token) does not exist",
    )
    changed = copy.deepcopy(PIPELINE)
    changed["spec"] = {"sampling": {"mode": "head"}}
    assert states(INJECTED, pipelines=[changed])["web-5d9f-ok"][1].startswith(
        "stale: TracingPipeline"
    )


def test_doctor_check_and_status_table() -> None:
    views = view.workload_views(
        [INJECTED, pod("web-5d9f-late", ASKS)], [PIPELINE], [CONFIG], [SECRET]
    )
    check = doctor.check_injection(views)
    assert check.status == doctor.FAIL and check.summary.startswith("1 of 2 pod(s)")
    assert any(
        "web-5d9f-late (traces): NOT injected: the webhook did not answer" in e
        for e in check.evidence
    )
    assert doctor.check_injection([]).status == doctor.SKIP
    assert (
        doctor.check_injection(
            view.workload_views([INJECTED], [PIPELINE], [CONFIG], [SECRET])
        ).status
        == doctor.PASS
    )
    text = status.render_table(
        {"namespace": "shop", "kvclusters": [], "tracingpipelines": [], "injection": views}
    )
    assert "Injection (kvtrace.dev/inject):" in text and "Deployment/web" in text and "NO" in text
