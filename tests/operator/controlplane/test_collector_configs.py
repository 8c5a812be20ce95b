"""Every collector configuration the operator renders passes the real `otelcol validate` (the
cached otelcol-kvtrace build, docs/design.md section 5): each sampling mode, one and two tiers,
extra exporters and receivers, redaction; and the one the operator actually applied."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from kvtrace.devstack.backends import validate_config
from kvtrace.devstack.operator_fixtures import Kube, Operator
from kvtrace.devstack.pytest_plugin import require_binaries
from kvtrace_operator.render import render_pipeline

pytestmark = pytest.mark.controlplane

COLLECTOR_COMPONENTS = {"collector", "collector-loadbalancer", "collector-sampling"}

EXTRAS = {
    "exporters": {
        "otlp": [
            {
                "name": "vendor",
                "endpoint": "https://otlp.example.com:4317",
                "headers": {"x-api-key": "k"},
            },
            {
                "name": "archive",
                "endpoint": "https://archive.example.com:4318",
                "protocol": "http",
                "compression": "gzip",
            },
        ],
        "debug": {"enabled": True, "verbosity": "detailed"},
    },
    "receivers": {"zipkin": {"enabled": True}, "jaeger": {"enabled": True}},
    "redaction": {
        "hashAttributes": ["kvstore.key", "db.query.text"],
        "blockedKeyPatterns": ["password.*"],
        "blockedValues": ["4[0-9]{12}(?:[0-9]{3})?"],
    },
}

SPECS: dict[str, dict[str, Any]] = {
    "production-defaults": {},
    "production-two-tiers": {"collector": {"replicas": 3}},
    "production-no-keep-errors": {
        "sampling": {"keepErrors": False, "latencyThreshold": "2s", "ratio": 0.01}
    },
    "development": {"sampling": {"mode": "development"}},
    "development-raw-keys": {
        "sampling": {"mode": "development"},
        "redaction": {"hashAttributes": []},
    },
    "head": {"sampling": {"mode": "head", "ratio": 0.25}},
    "head-two-replicas": {"sampling": {"mode": "head"}, "collector": {"replicas": 2}},
    "extras-two-tiers": {**EXTRAS, "collector": {"replicas": 2}},
    "without-jaeger": {"jaeger": {"enabled": False}, "exporters": EXTRAS["exporters"]},
    "tuned": {
        "collector": {
            "batch": {"sendBatchSize": 512, "timeout": "1s"},
            "memoryLimiter": {
                "checkInterval": "5s",
                "limitPercentage": 70,
                "spikeLimitPercentage": 20,
            },
        }
    },
}


def collector_configs(pipeline: dict[str, Any]) -> dict[str, str]:
    return {
        obj["metadata"]["name"]: obj["data"]["config.yaml"]
        for obj in render_pipeline(pipeline)
        if obj["kind"] == "ConfigMap"
        and obj["metadata"]["labels"]["app.kubernetes.io/component"] in COLLECTOR_COMPONENTS
    }


def otelcol_validate(config: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``otelcol validate`` in a collector pod's environment (its node's name, an API server)."""
    require_binaries("otelcol-kvtrace")
    path.parent.mkdir(parents=True, exist_ok=True)
    return validate_config(config, workdir=path.parent)


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
def test_rendered_collector_config_passes_otelcol_validate(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    pipeline = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store", "uid": "u1"},
        "spec": spec,
    }
    configs = collector_configs(pipeline)
    two_tiers = (
        spec.get("collector", {}).get("replicas", 1) > 1
        and spec.get("sampling", {}).get("mode", "production") == "production"
    )
    assert len(configs) == (2 if two_tiers else 1)
    for name, config in configs.items():
        proc = otelcol_validate(config, tmp_path / f"{name}.yaml")
        assert proc.returncode == 0, f"{name}: otelcol validate failed:\n{proc.stderr}\n{config}"


def test_applied_collector_configs_pass_otelcol_validate_and_a_dropped_tier_is_pruned(
    operator: Operator, kube_ns: Kube, poll: Any, tmp_path: Path
) -> None:
    def tp(replicas: int) -> dict[str, Any]:
        return {
            "apiVersion": "kvtrace.dev/v1alpha1",
            "kind": "TracingPipeline",
            "metadata": {"name": "traces"},
            "spec": {"collector": {"replicas": replicas}},
        }

    def collector_children() -> set[tuple[str, str, str]]:
        items = kube_ns.list(
            "configmaps,services,deployments", "app.kubernetes.io/managed-by=kvtrace-operator"
        )
        return {
            (
                item["kind"],
                item["metadata"]["name"],
                item["metadata"]["labels"]["app.kubernetes.io/component"],
            )
            for item in items
            if item["metadata"]["labels"]["app.kubernetes.io/component"] in COLLECTOR_COMPONENTS
        }

    kube_ns.apply(tp(2))
    poll(
        lambda: kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True"),
        timeout=90,
        message="two-tier pipeline Ready",
    )
    assert collector_children() == {
        (kind, name, component)
        for name, component in (
            ("traces-collector", "collector-loadbalancer"),
            ("traces-collector-sampling", "collector-sampling"),
        )
        for kind in ("ConfigMap", "Service", "Deployment")
    }
    for cm in kube_ns.list("configmaps", "app.kubernetes.io/managed-by=kvtrace-operator"):
        if cm["metadata"]["labels"]["app.kubernetes.io/component"] in COLLECTOR_COMPONENTS:
            proc = otelcol_validate(
                cm["data"]["config.yaml"], tmp_path / f"{cm['metadata']['name']}.yaml"
            )
            assert proc.returncode == 0, proc.stderr

    # Back to one replica: no load-balancing tier any more; its objects are deleted.
    kube_ns.apply(tp(1))
    expected = {
        (kind, "traces-collector", "collector") for kind in ("ConfigMap", "Service", "Deployment")
    }
    poll(
        lambda: collector_children() == expected,
        timeout=90,
        message=f"one collector tier left: {collector_children()}",
    )
    # Ready was already True for the two tiers: wait for the status written after the change.
    one_tier = {"replicas": 1, "readyReplicas": 1, "ready": "1/1", "tiers": 1}
    poll(
        lambda: (
            (kube_ns.get("tracingpipeline", "traces") or {}).get("status", {}).get("collector")
            == one_tier
        ),
        timeout=90,
        message=f"status of one tier: {kube_ns.get('tracingpipeline', 'traces')}",
    )
    assert kube_ns.condition_is("tracingpipeline", "traces", "Ready", "True")
