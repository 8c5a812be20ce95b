"""kvtrace doctor's resource detection check: which detectors the edge collector runs and what
each added to the canary's resource (pure: inspect/doctor_environment.py and
doctor.check_resource_detection)."""

from __future__ import annotations

from typing import Any

import pytest

from kvtrace.inspect import doctor, doctor_environment
from kvtrace_operator.render import render_collector_config
from kvtrace_operator.render.environment import CLOUD_PROVIDERS

pytestmark = pytest.mark.unit

FOUND = {"found": True}
NODE = {"k8s.node.name": "node-a"}
SYSTEM = {"host.name": "traces-collector-5d9f-x2", "os.type": "linux"}


def config(*detectors: str) -> dict[str, Any]:
    spec = {"collector": {"resourceDetection": {"detectors": list(detectors)}}}
    return render_collector_config(
        {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "TracingPipeline",
            "metadata": {"name": "traces", "namespace": "store"},
            "spec": spec,
        }
    )


def check(cfg: Any, resource: dict[str, Any] | None) -> doctor.Check:
    result = None if resource is None else {**FOUND, "resource": resource}
    return doctor.check_resource_detection(cfg, result, "traces-collector")


def test_the_detectors_come_from_the_rendered_config() -> None:
    assert doctor_environment.detectors_of(config("env", "system", "k8snode")) == [
        "env",
        "system",
        "k8s_api",
    ]
    assert doctor_environment.detectors_of(config()) == []
    assert doctor_environment.detectors_of({}) == []


def test_every_detector_that_found_its_attributes_passes() -> None:
    result = check(
        config("env", "system", "k8snode"), {"service.name": "kvtrace-doctor", **NODE, **SYSTEM}
    )
    assert result.status == doctor.PASS, result
    assert "system found host.name=traces-collector-5d9f-x2, os.type=linux" in result.evidence
    assert "k8s_api found k8s.node.name=node-a" in result.evidence
    assert result.evidence[0] == "traces-collector runs detectors env, system, k8s_api"


def test_a_node_detector_without_its_grant_warns_with_the_fix() -> None:
    result = check(config("env", "system", "k8snode"), {"service.name": "x", **SYSTEM})
    assert result.status == doctor.WARN
    assert result.summary == "k8s_api found nothing on the canary"
    assert "get on nodes" in result.fix and "traces-collector" in result.fix


@pytest.mark.parametrize("detector", ["ec2", "eks", "gcp", "aks", "digitalocean"])
def test_a_cloud_detector_is_credited_by_its_provider(detector: str) -> None:
    cfg = config("system", detector)
    provider = CLOUD_PROVIDERS[detector]
    cloud = {"cloud.provider": provider, "cloud.region": "r1", "k8s.cluster.name": "c1"}
    result = check(cfg, {**SYSTEM, **cloud})
    assert result.status == doctor.PASS, result
    assert (
        f"{detector} found cloud.provider={provider}, cloud.region=r1, k8s.cluster.name=c1"
        in result.evidence
    )
    elsewhere = check(cfg, {**SYSTEM, "cloud.provider": "somewhere-else"})
    assert elsewhere.status == doctor.WARN
    assert f"remove {detector}" in elsewhere.fix and provider in elsewhere.fix


def test_without_a_canary_or_detectors_it_skips() -> None:
    assert check(config("env", "system"), None).status == doctor.SKIP
    assert check(config(), {"service.name": "x"}).status == doctor.SKIP
    assert check("ConfigMap missing", {"service.name": "x"}).status == doctor.SKIP


def test_env_alone_never_warns() -> None:
    result = check(config("env"), {"service.name": "x"})
    assert result.status == doctor.PASS
    assert "env: the collector has no OTEL_RESOURCE_ATTRIBUTES of its own" in result.evidence
