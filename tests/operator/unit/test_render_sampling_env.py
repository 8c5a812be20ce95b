"""Sampling semantics at the SDK (docs/design.md section 4) and the OTel env of KV pods."""

from __future__ import annotations

from typing import Any

import pytest
from render_testlib import kvcluster, pipeline

from kvtrace_operator.render import otel_environment, render_collector_config, render_pipeline

pytestmark = pytest.mark.unit

ALLOWED = {
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_EXPORTER",
    "OTEL_PROPAGATORS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    # deliberate addition (docs/crds.md): the pipeline carries traces only
    "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER",
    # deliberate addition (docs/tracing.md): the batch span processor, sized for tail sampling
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    # downward API, referenced as $(POD_NAME) and $(NODE_NAME)
    "POD_NAME",
    "NODE_NAME",
    # auth, on by default (docs/security.md): the standard header variable, built by the
    # kubelet from the token Secret's key, referenced as $(KVTRACE_OTLP_TOKEN)
    "OTEL_EXPORTER_OTLP_HEADERS",
    "KVTRACE_OTLP_TOKEN",
    # TLS, on by default (docs/security.md): the standard CA-file variable
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
}


def env(cluster: dict[str, Any], tp: dict[str, Any] | None) -> dict[str, Any]:
    return {
        item["name"]: item.get("value", item.get("valueFrom"))
        for item in otel_environment(cluster, tp)
    }


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 1.0])
class TestSamplingSemantics:
    def test_production_never_head_samples(self, ratio: float) -> None:
        tp = pipeline(sampling={"mode": "production", "ratio": ratio})
        variables = env(kvcluster(), tp)
        assert variables["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
        assert "OTEL_TRACES_SAMPLER_ARG" not in variables
        assert "tail_sampling" in render_collector_config(tp)["processors"]

    def test_head(self, ratio: float) -> None:
        tp = pipeline(sampling={"mode": "head", "ratio": ratio})
        variables = env(kvcluster(), tp)
        assert variables["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert float(variables["OTEL_TRACES_SAMPLER_ARG"]) == ratio
        config = render_collector_config(tp)
        assert "tail_sampling" not in config["processors"] and "debug" not in config["exporters"]

    def test_development_keeps_everything(self, ratio: float) -> None:
        tp = pipeline(sampling={"mode": "development", "ratio": ratio})
        variables = env(kvcluster(), tp)
        assert variables["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
        config = render_collector_config(tp)
        assert "tail_sampling" not in config["processors"]
        assert (
            "debug" in config["exporters"]
            and "debug" in config["service"]["pipelines"]["traces"]["exporters"]
        )


class TestOtelEnvironment:
    def test_untraced(self) -> None:
        assert otel_environment(kvcluster(), None) == [
            {"name": "OTEL_SDK_DISABLED", "value": "true"}
        ]

    def test_only_standard_variables(self) -> None:
        assert set(env(kvcluster(), pipeline())) <= ALLOWED

    def test_resource_attributes(self) -> None:
        variables = env(kvcluster(name="orders", namespace="prod"), pipeline(namespace="prod"))
        attributes = dict(
            pair.split("=", 1) for pair in variables["OTEL_RESOURCE_ATTRIBUTES"].split(",")
        )
        assert attributes["k8s.namespace.name"] == "prod"
        assert attributes["kvtrace.cluster"] == "orders"
        assert attributes["k8s.pod.name"] == "$(POD_NAME)"
        assert attributes["k8s.node.name"] == "$(NODE_NAME)"
        assert attributes["kvstore.member.id"] == "$(POD_NAME)"
        assert variables["NODE_NAME"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}
        }

    def test_downward_variables_come_before_their_use(self) -> None:
        names = [item["name"] for item in otel_environment(kvcluster(), pipeline())]
        assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
        assert names.index("NODE_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")

    def test_endpoint_is_the_http_port_of_the_collector(self) -> None:
        variables = env(
            kvcluster(), pipeline(name="tp", namespace="store", collector={"replicas": 3})
        )
        assert (
            variables["OTEL_EXPORTER_OTLP_ENDPOINT"]
            == "https://tp-collector.store.svc.cluster.local:4318"
        )
        assert variables["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert variables["OTEL_TRACES_EXPORTER"] == "otlp"
        assert variables["OTEL_PROPAGATORS"] == "tracecontext,baggage"

    @pytest.mark.parametrize(
        ("tracing", "service"), [({}, "demo"), ({"serviceName": "kv-orders"}, "kv-orders")]
    )
    def test_service_name(self, tracing: dict[str, Any], service: str) -> None:
        assert env(kvcluster(tracing=tracing), pipeline())["OTEL_SERVICE_NAME"] == service


class TestBatchSpanProcessor:
    """OTEL_BSP_*: spans of one trace reach the tail sampler well within decisionWait, and the
    SDK's queue holds a collector outage of one export's retries (sampling.py explains both)."""

    @pytest.mark.parametrize(
        ("decision_wait", "delay"),
        [
            ("1s", "250"),
            ("2s", "500"),
            ("8s", "2000"),
            ("10s", "2500"),
            ("20s", "5000"),
            ("1m", "5000"),
            ("1500ms", "375"),
        ],
    )
    def test_schedule_delay_is_a_quarter_of_decision_wait_at_most_the_sdk_default(
        self, decision_wait: str, delay: str
    ) -> None:
        tp = pipeline(sampling={"decisionWait": decision_wait, "latencyThreshold": "100ms"})
        variables = env(kvcluster(), tp)
        assert variables["OTEL_BSP_SCHEDULE_DELAY"] == delay
        assert (
            render_collector_config(tp)["processors"]["tail_sampling"]["decision_wait"]
            == decision_wait
        )

    @pytest.mark.parametrize("mode", ["production", "development", "head"])
    def test_queue_and_batch_in_every_mode(self, mode: str) -> None:
        variables = env(kvcluster(), pipeline(sampling={"mode": mode}))
        assert variables["OTEL_BSP_MAX_QUEUE_SIZE"] == "16384"
        assert variables["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] == "512"
        assert variables["OTEL_BSP_SCHEDULE_DELAY"] == "2500"  # default decisionWait 10s

    def test_delay_leaves_the_sampler_a_quarter_of_decision_wait_at_the_shortest_valid_wait(
        self,
    ) -> None:
        # the shortest decisionWait validation accepts for a threshold and batch timeout ...
        tp = pipeline(sampling={"decisionWait": "1400ms", "latencyThreshold": "500ms"})
        delay_ms = int(env(kvcluster(), tp)["OTEL_BSP_SCHEDULE_DELAY"])
        # ... minus a trace just over the threshold, one export delay and the batch timeout
        assert 1400 - 500 - delay_ms - 200 >= 1400 // 4

    def test_untraced_pods_get_none(self) -> None:
        assert not any(name.startswith("OTEL_BSP_") for name in env(kvcluster(), None))

    def test_the_instrumentation_config_map_carries_them_too(self) -> None:
        data = next(
            o
            for o in render_pipeline(pipeline(sampling={"decisionWait": "4s"}))
            if o["kind"] == "ConfigMap" and "OTEL_BSP_SCHEDULE_DELAY" in o.get("data", {})
        )["data"]
        assert data["OTEL_BSP_SCHEDULE_DELAY"] == "1000"
