"""The pure parts of `kvtrace dev demo`'s metrics store (kvtrace.devstack.demo_metrics) on
the operator's real rendered objects: which flags the local Prometheus keeps, what it scrapes
where, and when the demo runs one."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kvtrace.devstack.demo_metrics import kv_job_settings, rendered_flags, scrape_targets
from kvtrace.devstack.demo_summary import endpoints_text, metrics_deployed
from kvtrace.devstack.prometheus import loopback_prometheus_config
from kvtrace_operator.render.images import PROMETHEUS_IMAGE
from kvtrace_operator.render.metrics import metrics_objects
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

PIPELINE = {
    "apiVersion": "kvtrace.dev/v1alpha1",
    "kind": "TracingPipeline",
    "metadata": {"name": "dev-traces", "namespace": "kv-demo", "uid": "u1"},
    "spec": {"metrics": {"prometheus": {"retention": "6h", "storageSize": "512Mi"}}},
}


def rendered(kind: str) -> dict[str, Any]:
    objects = metrics_objects(PIPELINE, parse_pipeline(PIPELINE["spec"]), PROMETHEUS_IMAGE)
    return next(o for o in objects if o["kind"] == kind)


def test_the_local_prometheus_keeps_the_rendered_retention_flags() -> None:
    flags = rendered_flags(rendered("Deployment"))
    assert flags == [
        "--storage.tsdb.retention.time=21600s",
        "--storage.tsdb.retention.size=409MB",
        "--enable-feature=created-timestamp-zero-ingestion",
    ]


def test_scrape_targets_in_the_rendered_config_with_tls_members() -> None:
    targets = scrape_targets(
        "kv-demo",
        "dev-traces",
        {
            "collector": {"dev-traces-collector-abc": "127.9.0.2"},
            "jaeger": {"dev-traces-jaeger-xyz": "127.9.0.3"},
        },
        "basic",
        {"basic-0": "127.9.0.4", "basic-1": "127.9.0.5"},
    )
    config = loopback_prometheus_config(
        yaml.safe_load(rendered("ConfigMap")["data"]["prometheus.yml"]),
        targets,
        None,
        kv_job_settings("/tmp/kv-ca.crt"),
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert sorted(jobs) == ["kvtrace-collector", "kvtrace-jaeger", "kvtrace-kvnode"]
    assert jobs["kvtrace-collector"]["static_configs"] == [
        {
            "targets": ["127.9.0.2:8889"],
            "labels": {
                "namespace": "kv-demo",
                "instance_of": "dev-traces",
                "pod": "dev-traces-collector-abc",
            },
        }
    ]
    assert jobs["kvtrace-jaeger"]["static_configs"][0]["targets"] == ["127.9.0.3:8888"]
    kv = jobs["kvtrace-kvnode"]
    assert [c["targets"][0] for c in kv["static_configs"]] == ["127.9.0.4:7070", "127.9.0.5:7070"]
    assert kv["static_configs"][1]["labels"] == {
        "namespace": "kv-demo",
        "instance_of": "basic",
        "pod": "basic-1",
    }
    assert kv["scheme"] == "https" and kv["tls_config"] == {"ca_file": "/tmp/kv-ca.crt"}
    assert "scheme" not in jobs["kvtrace-collector"]
    assert all("kubernetes_sd_configs" not in job for job in jobs.values())
    assert config["global"]["external_labels"] == {"kvtrace_pipeline": "kv-demo/dev-traces"}
    # Plaintext members: the rendered job as it is.
    assert kv_job_settings("") == {}


def test_the_demo_runs_a_prometheus_when_the_pipeline_deploys_one() -> None:
    def docs(metrics: dict[str, Any] | None) -> list[dict[str, Any]]:
        spec = {} if metrics is None else {"metrics": metrics}
        return [{"kind": "TracingPipeline", "metadata": {"name": "p"}, "spec": spec}]

    assert metrics_deployed(docs(None), "p")  # on by default
    assert metrics_deployed(docs({"enabled": True}), "p")
    assert not metrics_deployed(docs({"enabled": False}), "p")
    assert not metrics_deployed(docs({"external": {"url": "http://mimir:9009"}}), "p")
    assert not metrics_deployed(docs(None), "other")


def test_the_demo_ends_with_the_monitor_tab_and_prometheus_urls() -> None:
    text = endpoints_text(
        {"KUBECONFIG": "/k"}, "https://127.9.0.3:16686", "https://127.9.0.2:4318", "basic", "kv"
    )
    assert "Monitor" not in text and "Prometheus" not in text and "kvtrace top" not in text
    text = endpoints_text(
        {"KUBECONFIG": "/k"},
        "https://127.9.0.3:16686",
        "https://127.9.0.2:4318",
        "basic",
        "kv",
        prometheus_url="http://127.9.0.6:9090",
    )
    assert "  Jaeger Monitor tab (RED per operation): https://127.9.0.3:16686/monitor" in text
    assert "  Prometheus: http://127.9.0.6:9090" in text
    assert "  kvtrace top -n kv" in text
