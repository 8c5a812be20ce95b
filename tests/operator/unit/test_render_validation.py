"""Bad input: every SpecError names the field and what was expected (and the CRD schema
rejects the same resources, where it can express the rule)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from render_testlib import kvcluster, pipeline

from kvtrace_operator import crds
from kvtrace_operator.render import (
    SpecError,
    render_all,
    render_kvcluster,
    render_pipeline,
    strict,
    validate_kvcluster,
    validate_pipeline,
)
from kvtrace_operator.spec.defaults import KVCLUSTER_DEFAULTS, PIPELINE_DEFAULTS
from kvtrace_operator.spec.durations import parse_duration, single_unit

pytestmark = pytest.mark.unit

BAD_KVCLUSTERS: list[tuple[dict[str, Any], str, str]] = [
    (kvcluster(replicas=2), "spec.replicationFactor", "at most spec.replicas"),
    (kvcluster(replicas=0, replicationFactor=1), "spec.replicas", "integer from 1 to 100"),
    (kvcluster(replicas="3"), "spec.replicas", "integer"),
    (kvcluster(replicationFactor=9, replicas=10), "spec.replicationFactor", "from 1 to 7"),
    (kvcluster(consistency={"read": "most"}), "spec.consistency.read", "one, quorum, all"),
    (kvcluster(antiEntropy={"interval": "10 minutes"}), "spec.antiEntropy.interval", "duration"),
    (kvcluster(antiEntropy={"interval": "0s"}), "spec.antiEntropy.interval", "positive"),
    (kvcluster(antiEntropy={"interval": "10ms"}), "spec.antiEntropy.interval", "at least 1s"),
    (kvcluster(storage={"size": "lots"}), "spec.storage.size", "quantity"),
    (
        kvcluster(scheduling={"podAntiAffinity": "always"}),
        "spec.scheduling.podAntiAffinity",
        "preferred",
    ),
    (kvcluster(name="Demo"), "metadata.name", "DNS label"),
    (kvcluster(name="x" * 53), "metadata.name", "at most 52"),
]
BAD_PIPELINES: list[tuple[dict[str, Any], str, str]] = [
    (
        pipeline(sampling={"mode": "head", "keepErrors": True}),
        "spec.sampling.keepErrors",
        "cannot keep every error",
    ),
    (pipeline(sampling={"mode": "tail"}), "spec.sampling.mode", "production, development, head"),
    (pipeline(sampling={"ratio": 1.5}), "spec.sampling.ratio", "from 0 to 1"),
    (pipeline(sampling={"ratio": -0.1}), "spec.sampling.ratio", "from 0 to 1"),
    (pipeline(sampling={"latencyThreshold": "fast"}), "spec.sampling.latencyThreshold", "duration"),
    (
        pipeline(sampling={"latencyThreshold": "500us"}),
        "spec.sampling.latencyThreshold",
        "at least 1ms",
    ),
    (
        pipeline(jaeger={"storage": {"retention": "30s"}}),
        "spec.jaeger.storage.retention",
        "at least 1m",
    ),
    (pipeline(sampling={"decisionWait": "10"}), "spec.sampling.decisionWait", "duration"),
    # tail sampling needs decisionWait >= 2 x (latencyThreshold + collector.batch.timeout)
    (
        pipeline(sampling={"decisionWait": "1s"}),
        "spec.sampling.decisionWait",
        "at least 2 x (spec.sampling.latencyThreshold + spec.collector.batch.timeout) = 1.4s with tail sampling, got '1s'",
    ),
    (
        pipeline(
            sampling={"decisionWait": "10s", "latencyThreshold": "5s"},
            collector={"batch": {"timeout": "1s"}},
        ),
        "spec.sampling.decisionWait",
        "= 12s with tail sampling",
    ),
    (pipeline(collector={"replicas": 0}), "spec.collector.replicas", "from 1 to 20"),
    (
        pipeline(jaeger={"storage": {"type": "cassandra"}}),
        "spec.jaeger.storage.type",
        "memory, badger",
    ),
    (
        pipeline(jaeger={"storage": {"retention": "1 week"}}),
        "spec.jaeger.storage.retention",
        "duration",
    ),
    (
        pipeline(jaeger={"tenancy": {"enabled": True}}),
        "spec.jaeger.tenancy.tenants",
        "at least one tenant",
    ),
    (pipeline(jaeger={"enabled": False}), "spec.exporters", "nowhere to go"),
    (
        pipeline(
            exporters={"otlp": [{"name": "a", "endpoint": "x:1"}, {"name": "a", "endpoint": "y:1"}]}
        ),
        "spec.exporters.otlp[1].name",
        "duplicate",
    ),
    (pipeline(exporters={"otlp": [{"name": "a"}]}), "spec.exporters.otlp[0].endpoint", "endpoint"),
    (
        pipeline(exporters={"otlp": [{"name": "a", "endpoint": "x", "protocol": "thrift"}]}),
        "spec.exporters.otlp[0].protocol",
        "grpc, http",
    ),
    (
        pipeline(
            exporters={"otlp": [{"name": "a", "endpoint": "x", "tls": {"caSecret": {"name": "s"}}}]}
        ),
        "spec.exporters.otlp[0].tls.caSecret",
        "{name: SECRET, key: KEY}",
    ),
    (
        pipeline(
            exporters={"otlp": [{"name": "a", "endpoint": "x", "secretHeaders": [{"name": "a b"}]}]}
        ),
        "spec.exporters.otlp[0].secretHeaders[0].name",
        "header name",
    ),
    (
        pipeline(
            exporters={"otlp": [{"name": "a", "endpoint": "x", "secretHeaders": [{"name": "h"}]}]}
        ),
        "spec.exporters.otlp[0].secretHeaders[0].secretKeyRef",
        "{name: SECRET, key: KEY}",
    ),
    (
        pipeline(
            exporters={
                "otlp": [
                    {
                        "name": "a",
                        "endpoint": "x",
                        "secretHeaders": [
                            {"name": "h", "secretKeyRef": {"name": "s", "key": "k"}},
                            {"name": "H", "secretKeyRef": {"name": "s", "key": "k"}},
                        ],
                    }
                ]
            }
        ),
        "spec.exporters.otlp[0].secretHeaders[1].name",
        "duplicate header",
    ),
    (pipeline(redaction={"hashAttributes": []}), "spec.redaction.hashAttributes", "kvstore.key"),
    (pipeline(name="p" * 41), "metadata.name", "at most 40"),
    # spec.metrics (wrong types: TestWrongTypesNeverCrash, through the strict check)
    (
        pipeline(metrics={"prometheus": {"retention": "2 days"}}),
        "spec.metrics.prometheus.retention",
        "duration",
    ),
    (
        pipeline(metrics={"prometheus": {"retention": "30m"}}),
        "spec.metrics.prometheus.retention",
        "at least 1h",
    ),
    (
        pipeline(metrics={"prometheus": {"scrapeInterval": "500ms"}}),
        "spec.metrics.prometheus.scrapeInterval",
        "at least 1s",
    ),
    (
        pipeline(metrics={"prometheus": {"storageSize": "big"}}),
        "spec.metrics.prometheus.storageSize",
        "quantity",
    ),
    (
        pipeline(metrics={"enabled": True, "external": {}}),
        "spec.metrics.external.url",
        "http(s) URL",
    ),
    (
        pipeline(metrics={"enabled": True, "external": {"url": "prometheus:9090"}}),
        "spec.metrics.external.url",
        "http(s) URL",
    ),
    (
        pipeline(
            metrics={
                "enabled": True,
                "external": {"url": "http://p:9090", "otlpEndpoint": "p:4318"},
            }
        ),
        "spec.metrics.external.otlpEndpoint",
        "http(s) URL",
    ),
    (
        pipeline(metrics={"enabled": False, "external": {"url": "http://p:9090"}}),
        "spec.metrics.external",
        "needs enabled: true",
    ),
]


CASES = [
    (validate_kvcluster, lambda r: render_kvcluster(r, None), *case) for case in BAD_KVCLUSTERS
] + [(validate_pipeline, render_pipeline, *case) for case in BAD_PIPELINES]


class TestBadInput:
    @pytest.mark.parametrize(("validate", "render", "resource", "field", "words"), CASES)
    def test_rejected_with_field_path(
        self,
        validate: Callable[[dict[str, Any]], None],
        render: Callable[[dict[str, Any]], Any],
        resource: dict[str, Any],
        field: str,
        words: str,
    ) -> None:
        with pytest.raises(SpecError) as caught:
            validate(resource)
        assert caught.value.field == field
        assert words in caught.value.message
        assert str(caught.value).startswith(f"{field}: ")
        with pytest.raises(SpecError):
            render(resource)


class TestGoodInput:
    @pytest.mark.parametrize(
        "resource",
        [
            pipeline(sampling={"mode": "head", "keepErrors": False}),
            pipeline(sampling={"mode": "head"}),
            pipeline(sampling={"mode": "development"}, redaction={"hashAttributes": []}),
            pipeline(jaeger={"enabled": False}, exporters={"debug": {"enabled": True}}),
            pipeline(jaeger={"tenancy": {"enabled": True, "tenants": ["a"]}}),
            # exactly 2 x (latencyThreshold + batch timeout); without tail sampling decisionWait is unused
            pipeline(
                sampling={"decisionWait": "1s", "latencyThreshold": "300ms"},
                collector={"batch": {"timeout": "200ms"}},
            ),
            pipeline(sampling={"mode": "head", "decisionWait": "1s"}),
            pipeline(sampling={"mode": "development", "decisionWait": "1s"}),
            pipeline(metrics={"enabled": False}),
            pipeline(
                metrics={
                    "enabled": True,
                    "external": {"url": "https://mimir.example.com/prometheus"},
                }
            ),
        ],
    )
    def test_accepted(self, resource: dict[str, Any]) -> None:
        validate_pipeline(resource)


class TestRenderAll:
    def test_unknown_kind(self) -> None:
        with pytest.raises(SpecError) as caught:
            render_all([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}])
        assert caught.value.field == "kind"

    def test_wrong_api_version(self) -> None:
        resource = kvcluster()
        resource["apiVersion"] = "kvtrace.dev/v1"
        with pytest.raises(SpecError) as caught:
            render_all([resource])
        assert caught.value.field == "apiVersion"

    def test_pipeline_in_another_namespace_is_not_used(self) -> None:
        cluster = kvcluster(tracing={"pipelineRef": {"name": "traces"}})
        objects = render_all([cluster, pipeline(namespace="elsewhere")])
        sts = [o for o in objects if o["kind"] == "StatefulSet"][0]
        env = {
            e["name"]: e.get("value")
            for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["OTEL_SDK_DISABLED"] == "true"

    def test_pipeline_among_inputs_is_used(self) -> None:
        cluster = kvcluster(tracing={"pipelineRef": {"name": "traces"}})
        objects = render_all([cluster, pipeline()])
        assert len(objects) == 9 + len(
            render_pipeline(pipeline())
        )  # 9: with its OTLP and KV client tokens
        sts = [o for o in objects if o["kind"] == "StatefulSet"][0]
        names = {e["name"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in names and "OTEL_SDK_DISABLED" not in names


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("1ns", 1),
        ("1us", 1000),
        ("500ms", 500_000_000),
        ("2s", 2 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("0.5s", 5 * 10**8),
    ],
)
def test_parse_duration(text: str, nanos: int) -> None:
    assert parse_duration(text, "f") == nanos


def _field_paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in tree.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found += _field_paths(value, (*prefix, key))
    return found


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return spec


WRONG_VALUES = [None, 5, 2.5, "x", [], {}, True, [1], {"a": 1}]
OPTIONAL_KVCLUSTER = [
    ("tracing",),
    ("tracing", "pipelineRef"),
    ("tracing", "serviceName"),
    ("resources",),
    ("scheduling", "tolerations"),
    ("storage", "storageClassName"),
]
OPTIONAL_PIPELINE = [
    ("sampling", "keepErrors"),
    ("jaeger", "tenancy", "tenants"),
    ("redaction", "blockedValues"),
]


def strict_report(resource: dict[str, Any]) -> strict.Report:
    return strict.check(resource, crds.schemas()[(resource["apiVersion"], resource["kind"])])


def strict_errors(resource: dict[str, Any]) -> list[str]:
    return [str(error) for error in strict_report(resource).errors]


def render_checked(resources: list[dict[str, Any]]) -> list[str]:
    """What `kvtrace render` does with ``resources``: the strict check against the CRDs (its
    errors returned), and only when it passes the render of what the API server would store
    (a SpecError is an answer too)."""
    reports = [strict_report(resource) for resource in resources]
    errors = [str(error) for report in reports for error in report.errors]
    if not errors:
        try:
            render_all([report.resource for report in reports])
        except SpecError as exc:
            errors.append(f"{exc.field}: {exc.message}")
    return errors


class TestWrongTypesNeverCrash:
    """A spec from a file with any value of the wrong type is an error naming its path, never a
    crash: the shape is checked once, by the strict check against the CRD (render.strict; the
    API server does it for the operator), before anything renders."""

    @pytest.mark.parametrize("value", WRONG_VALUES, ids=repr)
    @pytest.mark.parametrize(
        "path", _field_paths(KVCLUSTER_DEFAULTS) + OPTIONAL_KVCLUSTER, ids=".".join
    )
    def test_kvcluster(self, path: tuple[str, ...], value: Any) -> None:
        errors = render_checked([kvcluster(**_with(path, value)), pipeline()])
        assert not errors or any(f"spec.{path[0]}" in error for error in errors), errors

    @pytest.mark.parametrize(
        "value",
        [*WRONG_VALUES, [{"name": 3}], [{"name": "a", "endpoint": "b", "headers": {"h": 1}}]],
        ids=repr,
    )
    @pytest.mark.parametrize(
        "path", _field_paths(PIPELINE_DEFAULTS) + OPTIONAL_PIPELINE, ids=".".join
    )
    def test_pipeline(self, path: tuple[str, ...], value: Any) -> None:
        errors = render_checked([pipeline(**_with(path, value)), kvcluster()])
        assert not errors or any(f"spec.{path[0]}" in error for error in errors), errors

    @pytest.mark.parametrize("metadata", [None, 5, {}, {"name": 5}])
    def test_metadata(self, metadata: Any) -> None:
        for resource in (kvcluster(), pipeline()):
            resource["metadata"] = metadata
            errors = render_checked([resource])
            assert any(error.startswith("metadata") for error in errors), errors

    def test_message_names_the_expected_type(self) -> None:
        assert strict_errors(kvcluster(consistency="quorum"))[:1] == [
            'spec.consistency: Invalid value: "string": spec.consistency in body must be of '
            'type object: "string"'
        ]


@pytest.mark.parametrize(
    ("text", "node_form"),
    [
        ("10m", "10m"),
        ("500ms", "500ms"),
        ("1.5s", "1.5s"),
        ("1h30m", "5400s"),
        ("1500000us", "1500ms"),
        ("1m0.5s", "60500ms"),
    ],
)
def test_single_unit_durations_for_the_node(text: str, node_form: str) -> None:
    assert single_unit(text, "f") == node_form
