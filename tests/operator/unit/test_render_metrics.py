"""render/metrics.py and render/monitoring.py: span metrics before sampling, the pipeline's
Prometheus, Jaeger's SPM backend, the alert rules built from their data file."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from render_testlib import config_of, kvcluster, one, pipeline, validate_k8s

from kvtrace_operator.render import (
    render_collector_config,
    render_jaeger_config,
    render_kvcluster,
    render_pipeline,
)
from kvtrace_operator.render.collector import LOADBALANCER_TIER, SAMPLING_TIER
from kvtrace_operator.render.metrics import describes, retention_size
from kvtrace_operator.render.monitoring import alert_rules, fill
from kvtrace_operator.spec import Quantity, parse_pipeline

pytestmark = pytest.mark.unit

PROMETHEUS_URL = "http://traces-prometheus.store.svc.cluster.local:9090"


def metered(**spec: Any) -> dict[str, Any]:
    """A pipeline with spec.metrics.enabled true unless the spec says otherwise."""
    spec.setdefault("metrics", {}).setdefault("enabled", True)
    return pipeline(**spec)


def pipelines_of(config: dict[str, Any]) -> dict[str, Any]:
    return dict(config["service"]["pipelines"])


class TestCollector:
    @pytest.mark.parametrize(
        "spec", [{}, {"sampling": {"mode": "head"}}, {"sampling": {"mode": "development"}}]
    )
    def test_connectors_see_every_span_before_sampling(self, spec: dict[str, Any]) -> None:
        config = render_collector_config(metered(**spec))
        pipes = pipelines_of(config)
        # Fed by the very receivers of the traces pipeline, never behind tail_sampling.
        assert pipes["traces/spanmetrics"] == {
            "receivers": pipes["traces"]["receivers"],
            "processors": ["memory_limiter"],
            "exporters": ["span_metrics", "service_graph"],
        }
        assert pipes["metrics/spanmetrics"] == {
            "receivers": ["span_metrics", "service_graph"],
            "exporters": ["otlp_http/metrics"],
        }
        assert "otlp_http/metrics" not in pipes["traces"]["exporters"]
        dims = [d["name"] for d in config["connectors"]["span_metrics"]["dimensions"]]
        assert dims == ["kvstore.operation", "kvstore.consistency", "kvstore.member.id"]
        exporter = config["exporters"]["otlp_http/metrics"]
        assert exporter["metrics_endpoint"] == PROMETHEUS_URL + "/api/v1/otlp/v1/metrics"
        assert (
            exporter["sending_queue"]["queue_size"] == 100
        )  # bounded: a store down drops metrics only

    def test_two_tiers_compute_in_the_sampling_tier_only(self) -> None:
        pipe = metered(collector={"replicas": 2})
        assert "connectors" not in render_collector_config(pipe, LOADBALANCER_TIER)
        assert "traces/spanmetrics" in pipelines_of(render_collector_config(pipe, SAMPLING_TIER))

    def test_off(self) -> None:
        config = render_collector_config(metered(metrics={"enabled": False}))
        assert "connectors" not in config and list(pipelines_of(config)) == ["traces"]
        assert "otlp_http/metrics" not in config["exporters"]

    def test_external_store(self) -> None:
        config = render_collector_config(
            metered(metrics={"external": {"url": "https://mimir.example/prom/"}})
        )
        assert (
            config["exporters"]["otlp_http/metrics"]["metrics_endpoint"]
            == "https://mimir.example/prom/api/v1/otlp/v1/metrics"
        )
        explicit = render_collector_config(
            metered(
                metrics={
                    "external": {
                        "url": "https://mimir.example/prom",
                        "otlpEndpoint": "https://otlp.example/v1/metrics",
                    }
                }
            )
        )
        assert (
            explicit["exporters"]["otlp_http/metrics"]["metrics_endpoint"]
            == "https://otlp.example/v1/metrics"
        )


class TestJaeger:
    def test_monitor_tab_reads_the_pipelines_prometheus(self) -> None:
        config = render_jaeger_config(metered())
        assert config["extensions"]["jaeger_query"]["storage"] == {
            "traces": "traces",
            "metrics": "metrics",
        }
        assert config["extensions"]["jaeger_storage"]["metric_backends"] == {
            "metrics": {
                "prometheus": {
                    "endpoint": PROMETHEUS_URL,
                    "normalize_calls": True,
                    "normalize_duration": True,
                }
            }
        }

    def test_external_and_off(self) -> None:
        external = render_jaeger_config(
            metered(metrics={"external": {"url": "http://vm.mon:8428"}})
        )
        backend = external["extensions"]["jaeger_storage"]["metric_backends"]["metrics"][
            "prometheus"
        ]
        assert backend["endpoint"] == "http://vm.mon:8428"
        off = render_jaeger_config(metered(metrics={"enabled": False}))
        assert off["extensions"]["jaeger_query"]["storage"] == {"traces": "traces"}
        assert "metric_backends" not in off["extensions"]["jaeger_storage"]


class TestPrometheusObjects:
    def test_objects_are_valid_and_bounded(self) -> None:
        objects = render_pipeline(
            metered(metrics={"prometheus": {"retention": "6h", "storageSize": "2Gi"}})
        )
        for kind in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"):
            validate_k8s(one(objects, kind, "traces-prometheus"))
        deployment = one(objects, "Deployment", "traces-prometheus")
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == "prom/prometheus:v3.16.0"
        assert "--storage.tsdb.retention.time=21600s" in container["args"]
        assert "--storage.tsdb.retention.size=1638MB" in container["args"]
        assert "--web.enable-otlp-receiver" in container["args"]
        assert container["resources"]["limits"] == {"memory": "512Mi"}
        data = next(v for v in pod["volumes"] if v["name"] == "data")
        assert data["emptyDir"] == {"sizeLimit": "2Gi"}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        role = one(objects, "Role", "traces-prometheus")
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
        ]

    def test_config_scrapes_own_namespace_and_loads_rules(self) -> None:
        files = one(render_pipeline(metered()), "ConfigMap", "traces-prometheus")["data"]
        config = yaml.safe_load(files["prometheus.yml"])
        assert config["global"]["scrape_interval"] == "15s"
        assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert list(jobs) == ["kvtrace-collector", "kvtrace-jaeger", "kvtrace-kvnode"]
        for job in jobs.values():
            assert job["kubernetes_sd_configs"] == [
                {"role": "pod", "namespaces": {"names": ["store"]}}
            ]
        rules = yaml.safe_load(files["rules.yml"])
        assert {rule["alert"] for group in rules["groups"] for rule in group["rules"]} >= {
            "KVQuorumLost",
            "KVErrorRatioHigh",
            "KVLatencyP99AboveThreshold",
            "SpansRefused",
            "SpansDropped",
            "MemoryLimiterRefusing",
            "TailSamplingBufferNearFull",
            "TraceDeliveryFailing",
        }

    @pytest.mark.parametrize(("tls", "scheme"), [(True, "https"), (False, "http")])
    def test_kv_members_are_scraped_with_their_client_ports_scheme(
        self, tls: bool, scheme: str
    ) -> None:
        """The members say their client port's scheme in a label, and the KV job takes it:
        scraping a TLS port over http would read as every member down (KVQuorumLost)."""
        cluster = kvcluster(
            tracing={"pipelineRef": {"name": "traces"}}, security={"tls": {"enabled": tls}}
        )
        members = one(render_kvcluster(cluster, metered()), "StatefulSet")
        labels = members["spec"]["template"]["metadata"]["labels"]
        assert labels["kvtrace.dev/client-scheme"] == scheme
        files = one(render_pipeline(metered()), "ConfigMap", "traces-prometheus")["data"]
        jobs = {j["job_name"]: j for j in yaml.safe_load(files["prometheus.yml"])["scrape_configs"]}
        kv = jobs["kvtrace-kvnode"]
        assert {
            "source_labels": ["__meta_kubernetes_pod_label_kvtrace_dev_client_scheme"],
            "regex": "(https?)",
            "target_label": "__scheme__",
        } in kv["relabel_configs"]
        # One job for every cluster of the namespace, each with its own CA: encrypted, not
        # verified (/metrics needs no token and carries no secret).
        assert kv["tls_config"] == {"insecure_skip_verify": True}

    def test_external_or_off_deploys_nothing(self) -> None:
        for spec in (
            {"metrics": {"enabled": False}},
            {"metrics": {"external": {"url": "http://p:9090"}}},
        ):
            assert not [
                o for o in render_pipeline(metered(**spec)) if "prometheus" in o["metadata"]["name"]
            ]

    def test_deterministic(self) -> None:
        assert render_pipeline(metered()) == render_pipeline(metered())

    @pytest.mark.parametrize(
        ("size", "flag"), [("1Gi", "819MB"), ("512Mi", "409MB"), ("2G", "1525MB")]
    )
    def test_retention_size(self, size: str, flag: str) -> None:
        assert retention_size(Quantity.parse(size, "spec.metrics.prometheus.storageSize")) == flag


class TestRules:
    def test_pipeline_thresholds_are_filled_in(self) -> None:
        files = one(
            render_pipeline(
                metered(
                    sampling={"latencyThreshold": "250ms", "numTraces": 1000},
                    metrics={"prometheus": {"scrapeInterval": "5s"}},
                )
            ),
            "ConfigMap",
            "traces-prometheus",
        )["data"]
        rules = {
            rule["alert"]: rule
            for group in yaml.safe_load(files["rules.yml"])["groups"]
            for rule in group["rules"]
        }
        assert rules["KVLatencyP99AboveThreshold"]["expr"].rstrip().endswith("> 250")
        assert "0.9 * 1000" in rules["TailSamplingBufferNearFull"]["expr"]
        assert rules["KVQuorumLost"]["for"] == "20s"  # 4 scrape intervals
        assert "{{ $labels.instance_of }}" in rules["KVQuorumLost"]["annotations"]["summary"]

    def test_a_placeholder_without_value_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="KVTRACE_NOPE"):
            fill("x > ${KVTRACE_NOPE}", {})

    def test_standard_rules(self) -> None:
        assert [group["name"] for group in alert_rules()["groups"]] == [
            "kvtrace-kv",
            "kvtrace-pipeline",
        ]


def test_head_mode_says_what_the_metrics_describe() -> None:
    assert "head-sampled share" in describes(
        parse_pipeline({"sampling": {"mode": "head", "ratio": 0.2}})
    )
    assert (
        describes(parse_pipeline({"sampling": {"mode": "production", "ratio": 0.1}}))
        == "every span, before tail sampling"
    )


def test_config_of_collector_is_yaml() -> None:
    config_of(one(render_pipeline(metered()), "ConfigMap", "traces-collector"))
