"""render_collector_config and render_jaeger_config: the sampling semantics of docs/design.md
section 4, processor order, ports, exporters."""

from __future__ import annotations

from typing import Any

import pytest
from render_testlib import pipeline

from kvtrace_operator.render import render_collector_config, render_jaeger_config
from kvtrace_operator.render.redaction import DEFAULT_KEY_PATTERNS, DEFAULT_VALUE_PATTERNS
from kvtrace_operator.spec.defaults import PIPELINE_DEFAULTS

pytestmark = pytest.mark.unit

MODES = ["production", "development", "head"]


def traces(config: dict[str, Any]) -> dict[str, Any]:
    return config["service"]["pipelines"]["traces"]


@pytest.mark.parametrize("replicas", [1, 3])
@pytest.mark.parametrize("mode", MODES)
class TestCollectorConfig:
    def configs(self, mode: str, replicas: int, **spec: Any) -> list[dict[str, Any]]:
        tp = pipeline(
            sampling={"mode": mode, **spec.pop("sampling", {})},
            collector={"replicas": replicas},
            **spec,
        )
        tiers = (
            ["sampling", "loadbalancer"] if mode == "production" and replicas > 1 else ["sampling"]
        )
        return [render_collector_config(tp, tier) for tier in tiers]

    def test_memory_limiter_first_batch_last(self, mode: str, replicas: int) -> None:
        for config in self.configs(mode, replicas):
            processors = traces(config)["processors"]
            assert processors[0] == "memory_limiter" and processors[-1] == "batch"
            assert list(config["processors"]) == processors

    def test_pipeline_references_defined_components(self, mode: str, replicas: int) -> None:
        for config in self.configs(mode, replicas):
            for section in ("receivers", "processors"):
                assert traces(config)[section] == list(config[section])
            # Every exporter is in the traces pipeline but the span metrics' own (render/metrics.py).
            assert traces(config)["exporters"] == [
                name for name in config["exporters"] if name != "otlp_http/metrics"
            ]
            assert config["service"]["extensions"] == list(config["extensions"])

    def test_tail_sampling_only_in_production(self, mode: str, replicas: int) -> None:
        configs = self.configs(mode, replicas)
        tails = [config["processors"].get("tail_sampling") for config in configs]
        if mode != "production":
            assert tails == [None]
            return
        assert tails[0] is not None and all(tail is None for tail in tails[1:])
        policies = {policy["type"]: policy for policy in tails[0]["policies"]}
        assert policies["status_code"]["status_code"] == {"status_codes": ["ERROR"]}
        assert policies["latency"]["latency"] == {"threshold_ms": 500}
        assert policies["probabilistic"]["probabilistic"] == {"sampling_percentage": 10}
        assert policies["string_attribute"]["string_attribute"] == {
            "key": "service.name",
            "values": ["kvtrace-operator"],
        }
        assert tails[0]["decision_wait"] == "10s"

    def test_edge_processing_happens_once(self, mode: str, replicas: int) -> None:
        configs = self.configs(mode, replicas)
        edge = [config for config in configs if "resource_detection" in config["processors"]]
        assert len(edge) == 1
        assert edge[0]["processors"]["resource_detection"]["detectors"] == [
            "env",
            "system",
            "k8s_api",
        ]
        assert sum("k8s_attributes" in config["processors"] for config in configs) == 1
        assert "k8s_attributes" in edge[0]["processors"]
        assert edge[0]["processors"]["attributes/hash"] == {
            "actions": [{"key": "kvstore.key", "action": "hash"}]
        }
        assert sum("attributes/hash" in config["processors"] for config in configs) == 1

    def test_ports(self, mode: str, replicas: int) -> None:
        configs = self.configs(mode, replicas)
        for config in configs:
            assert config["extensions"]["health_check"] == {"endpoint": "0.0.0.0:13133"}
            # auth is on by default, on the edge only (the tier applications send to); TLS
            # (managed) on every tier's receivers
            auth = (
                {"auth": {"authenticator": "bearertokenauth/otlp"}} if config is configs[-1] else {}
            )
            tls = {
                "tls": {
                    "cert_file": "/etc/otelcol-serving/tls.crt",
                    "key_file": "/etc/otelcol-serving/tls.key",
                    "reload_interval": "1h",
                }
            }
            assert config["receivers"]["otlp"]["protocols"] == {
                "grpc": {"endpoint": "0.0.0.0:4317", **auth, **tls},
                "http": {"endpoint": "0.0.0.0:4318", **auth, **tls},
            }
            prometheus = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"][
                "exporter"
            ]["prometheus"]
            assert prometheus["port"] == 8889  # Jaeger keeps 8888

    def test_exporters(self, mode: str, replicas: int) -> None:
        configs = self.configs(mode, replicas)
        destination = configs[0]["exporters"]
        jaeger = "traces-jaeger-otlp.store.svc.cluster.local"  # TLS by default, verifying that name
        assert destination["otlp_grpc/jaeger"] == {
            "endpoint": f"{jaeger}:4317",
            "tls": {"ca_file": "/etc/otelcol-trust/ca.crt", "server_name_override": jaeger},
        }
        plaintext = self.configs(mode, replicas, security={"tls": {"enabled": False}})[0][
            "exporters"
        ]
        assert plaintext["otlp_grpc/jaeger"]["tls"] == {"insecure": True}
        assert ("debug" in destination) == (mode == "development")

    def test_user_exporters(self, mode: str, replicas: int) -> None:
        exporters = {
            "otlp": [
                {
                    "name": "vendor",
                    "endpoint": "otlp.vendor.io:443",
                    "headers": {"x-key": "k", "a": "b"},
                },
                {
                    "name": "lake",
                    "endpoint": "https://lake:4318",
                    "protocol": "http",
                    "compression": "zstd",
                    "tls": {"insecureSkipVerify": True},
                },
            ],
            "debug": {"enabled": True, "verbosity": "detailed"},
        }
        destination = self.configs(mode, replicas, exporters=exporters)[0]["exporters"]
        assert destination["otlp_grpc/vendor"] == {
            "endpoint": "otlp.vendor.io:443",
            "tls": {"insecure": False, "insecure_skip_verify": False},
            "headers": {"a": "b", "x-key": "k"},
        }
        assert destination["otlp_http/lake"] == {
            "endpoint": "https://lake:4318",
            "tls": {"insecure": False, "insecure_skip_verify": True},
            "compression": "zstd",
        }
        assert destination["debug"] == {"verbosity": "detailed"}

    def test_extra_receivers_at_the_edge(self, mode: str, replicas: int) -> None:
        configs = self.configs(
            mode, replicas, receivers={"zipkin": {"enabled": True}, "jaeger": {"enabled": True}}
        )
        edge = configs[-1]
        auth = {"authenticator": "bearertokenauth/otlp"}  # on by default
        assert edge["receivers"]["zipkin"] == {
            "endpoint": "0.0.0.0:9411",
            "auth": auth,
            "tls": {
                "cert_file": "/etc/otelcol-serving/tls.crt",
                "key_file": "/etc/otelcol-serving/tls.key",
                "reload_interval": "1h",
            },
        }  # TLS on by default
        assert set(edge["receivers"]["jaeger"]["protocols"]) == {"grpc", "thrift_http"}
        assert all(
            protocol["auth"] == auth
            for protocol in edge["receivers"]["jaeger"]["protocols"].values()
        )
        for config in configs[:-1]:
            assert list(config["receivers"]) == ["otlp"]

    def test_redaction(self, mode: str, replicas: int) -> None:
        redaction = {"blockedKeyPatterns": [".*token.*"], "blockedValues": ["[0-9]{16}"]}
        edge = self.configs(mode, replicas, redaction=redaction)[-1]
        # The user's patterns come after the default ones (tests/security covers those).
        assert edge["processors"]["redaction"] == {
            "allow_all_keys": True,
            "blocked_key_patterns": [*DEFAULT_KEY_PATTERNS, ".*token.*"],
            "blocked_values": [*DEFAULT_VALUE_PATTERNS, "[0-9]{16}"],
            "summary": "silent",
        }
        only_user = self.configs(mode, replicas, redaction={**redaction, "defaultPatterns": False})[
            -1
        ]
        assert only_user["processors"]["redaction"]["blocked_values"] == ["[0-9]{16}"]
        default = self.configs(mode, replicas)[-1]["processors"]
        assert default["redaction"]["blocked_values"] == DEFAULT_VALUE_PATTERNS
        assert (
            "redaction"
            not in self.configs(mode, replicas, redaction={"defaultPatterns": False})[-1][
                "processors"
            ]
        )
        for config in self.configs(mode, replicas)[:-1]:  # once, at the edge
            assert "redaction" not in config["processors"]


class TestSamplingPolicies:
    @pytest.mark.parametrize(
        ("ratio", "percentage"), [(0.1, 10), (0.0, 0), (1.0, 100), (0.255, 25.5)]
    )
    def test_ratio(self, ratio: float, percentage: float) -> None:
        config = render_collector_config(pipeline(sampling={"ratio": ratio}))
        [policy] = [
            p
            for p in config["processors"]["tail_sampling"]["policies"]
            if p["type"] == "probabilistic"
        ]
        assert policy["probabilistic"]["sampling_percentage"] == percentage

    @pytest.mark.parametrize(
        ("threshold", "ms"), [("500ms", 500), ("2s", 2000), ("1m30s", 90000), ("1.5s", 1500)]
    )
    def test_latency_threshold(self, threshold: str, ms: int) -> None:
        config = render_collector_config(pipeline(sampling={"latencyThreshold": threshold}))
        [policy] = [
            p for p in config["processors"]["tail_sampling"]["policies"] if p["type"] == "latency"
        ]
        assert policy["latency"]["threshold_ms"] == ms

    def test_keep_errors_false_drops_the_error_policy(self) -> None:
        config = render_collector_config(pipeline(sampling={"keepErrors": False}))
        assert [p["type"] for p in config["processors"]["tail_sampling"]["policies"]] == [
            "latency",
            "string_attribute",
            "probabilistic",
        ]

    def test_development_hashing_can_be_turned_off_explicitly(self) -> None:
        config = render_collector_config(
            pipeline(sampling={"mode": "development"}, redaction={"hashAttributes": []})
        )
        assert "attributes/hash" not in config["processors"]

    def test_unknown_tier(self) -> None:
        with pytest.raises(ValueError, match="tier"):
            render_collector_config(pipeline(), "edge")


@pytest.mark.parametrize(
    "storage", [{}, {"type": "badger", "retention": "24h"}, {"type": "memory", "maxTraces": 5}]
)
@pytest.mark.parametrize(
    "tenancy", [{}, {"enabled": True, "header": "x-org", "tenants": ["a", "b"]}]
)
class TestJaegerConfig:
    def config(self, storage: dict[str, Any], tenancy: dict[str, Any]) -> dict[str, Any]:
        return render_jaeger_config(pipeline(jaeger={"storage": storage, "tenancy": tenancy}))

    def test_storage(self, storage: dict[str, Any], tenancy: dict[str, Any]) -> None:
        backends = self.config(storage, tenancy)["extensions"]["jaeger_storage"]["backends"]
        if storage.get("type") == "badger":
            assert backends == {
                "traces": {
                    "badger": {
                        "directories": {"keys": "/badger/keys", "values": "/badger/values"},
                        "ephemeral": False,
                        "ttl": {"spans": "24h"},
                    }
                }
            }
        else:
            assert backends == {
                "traces": {"memory": {"max_traces": storage.get("maxTraces", 100000)}}
            }

    def test_query_and_tenancy(self, storage: dict[str, Any], tenancy: dict[str, Any]) -> None:
        query = self.config(storage, tenancy)["extensions"]["jaeger_query"]
        metrics = (
            {"metrics": "metrics"} if PIPELINE_DEFAULTS["metrics"]["enabled"] else {}
        )  # SPM: spec.metrics
        assert query["storage"] == {"traces": "traces", **metrics}
        # The query port serves Jaeger's leaf: TLS (mode managed) is on by default.
        assert query["http"] == {
            "endpoint": "0.0.0.0:16686",
            "tls": {
                "cert_file": "/etc/jaeger-serving/tls.crt",
                "key_file": "/etc/jaeger-serving/tls.key",
                "reload_interval": "1h",
            },
        }
        if tenancy:
            assert query["multi_tenancy"] == {
                "Enabled": True,
                "Header": "x-org",
                "Tenants": ["a", "b"],
            }
        else:
            assert "multi_tenancy" not in query

    def test_pipeline_and_ports(self, storage: dict[str, Any], tenancy: dict[str, Any]) -> None:
        config = self.config(storage, tenancy)
        assert traces(config) == {
            "receivers": ["otlp"],
            "processors": ["batch"],
            "exporters": ["jaeger_storage_exporter"],
        }
        assert config["exporters"]["jaeger_storage_exporter"] == {"trace_storage": "traces"}
        assert config["extensions"]["healthcheckv2"]["http"] == {"endpoint": "0.0.0.0:13133"}
        prometheus = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"][
            "prometheus"
        ]
        assert prometheus["port"] == 8888
