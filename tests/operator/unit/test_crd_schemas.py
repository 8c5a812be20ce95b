"""The CRDs: names, subresources, printer columns, descriptions, defaults = Python defaults."""

from __future__ import annotations

import re
from typing import Any

import pytest
from render_testlib import crd, schema_default, spec_schema, validate_k8s

from kvtrace_operator.render.images import (
    COLLECTOR_IMAGE,
    JAEGER_IMAGE,
    KVNODE_IMAGE,
    PROMETHEUS_IMAGE,
)
from kvtrace_operator.render.validate import MAX_KVCLUSTER_NAME, MAX_PIPELINE_NAME, MIN_DURATIONS
from kvtrace_operator.spec import parse_kvcluster, parse_pipeline
from kvtrace_operator.spec.defaults import apply_defaults_kvcluster, apply_defaults_pipeline
from kvtrace_operator.spec.durations import DURATION_PATTERN

pytestmark = pytest.mark.unit

PLURALS = ("kvclusters", "tracingpipelines")


def walk(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


class TestCRDDefinitions:
    @pytest.mark.parametrize("plural", PLURALS)
    def test_valid_against_kubernetes_schema(self, plural: str) -> None:
        validate_k8s(crd(plural))

    @pytest.mark.parametrize(
        ("plural", "kind", "short"),
        [("kvclusters", "KVCluster", "kvc"), ("tracingpipelines", "TracingPipeline", "tp")],
    )
    def test_names(self, plural: str, kind: str, short: str) -> None:
        definition = crd(plural)
        assert definition["metadata"]["name"] == f"{plural}.kvtrace.dev"
        names = definition["spec"]["names"]
        assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
            kind,
            plural,
            [short],
            ["kvtrace"],
        )
        assert definition["spec"]["scope"] == "Namespaced"
        [version] = definition["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"]["status"] == {}

    def test_kvcluster_scale_subresource(self) -> None:
        scale = crd("kvclusters")["spec"]["versions"][0]["subresources"]["scale"]
        assert scale == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }

    @pytest.mark.parametrize(
        ("plural", "columns"),
        [
            ("kvclusters", ["Ready", "Phase", "Pipeline", "Age"]),
            (
                "tracingpipelines",
                ["Mode", "Ratio", "Collector", "Jaeger", "Ready", "Delivery", "Age"],
            ),
        ],
    )
    def test_printer_columns(self, plural: str, columns: list[str]) -> None:
        version = crd(plural)["spec"]["versions"][0]
        assert [column["name"] for column in version["additionalPrinterColumns"]] == columns

    @pytest.mark.parametrize("plural", PLURALS)
    def test_every_field_is_described(self, plural: str) -> None:
        schema = crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        missing = [
            path
            for path, sub in walk(schema)
            if path
            and path != ".metadata"
            and "{}" not in path
            and "[]" not in path[-2:]
            and "description" not in sub
        ]
        assert missing == []

    @pytest.mark.parametrize(
        ("plural", "fields"),
        [
            (
                "kvclusters",
                {
                    ".antiEntropy.interval",
                    ".security.tls.duration",
                    ".security.tls.renewBefore",
                    ".security.tls.caDuration",
                    ".security.tls.caRenewBefore",
                },
            ),
            (
                "tracingpipelines",
                {
                    ".sampling.latencyThreshold",
                    ".sampling.decisionWait",
                    ".sampling.retroactive.bufferAge",
                    ".collector.batch.timeout",
                    ".collector.memoryLimiter.checkInterval",
                    ".collector.resourceDetection.timeout",
                    ".jaeger.storage.retention",
                    ".jaeger.archive.retention",
                    ".security.tls.duration",
                    ".security.tls.renewBefore",
                    ".security.tls.caDuration",
                    ".security.tls.caRenewBefore",
                    ".metrics.prometheus.retention",
                    ".metrics.prometheus.scrapeInterval",
                },
            ),
        ],
    )
    def test_duration_fields_use_the_renderer_pattern(self, plural: str, fields: set[str]) -> None:
        found = {
            path: sub.get("pattern")
            for path, sub in walk(spec_schema(plural))
            if "(ns|us|ms|s|m|h)" in sub.get("pattern", "")
        }
        assert found == dict.fromkeys(fields, DURATION_PATTERN)

    def test_duration_minimums_match_the_renderer(self) -> None:
        found = {}
        for plural in PLURALS:
            for path, sub in walk(spec_schema(plural)):
                for rule in sub.get("x-kubernetes-validations", []):
                    match = re.search(r'duration\(self\) >= duration\("([^"]+)"\)', rule["rule"])
                    if match:
                        found[f"spec{path}"] = match.group(1)
        assert found == MIN_DURATIONS

    @pytest.mark.parametrize(
        ("plural", "limit"),
        [("kvclusters", MAX_KVCLUSTER_NAME), ("tracingpipelines", MAX_PIPELINE_NAME)],
    )
    def test_name_rule_matches_the_renderer(self, plural: str, limit: int) -> None:
        [rule] = crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
            "x-kubernetes-validations"
        ]
        assert f"size(self.metadata.name) <= {limit}" in rule["rule"]
        assert rule["message"].startswith(
            f"metadata.name must be a DNS label of at most {limit} characters"
        )

    @pytest.mark.parametrize("plural", PLURALS)
    def test_status_conditions_follow_api_conventions(self, plural: str) -> None:
        status = crd(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "status"
        ]
        conditions = status["properties"]["conditions"]
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert set(conditions["items"]["properties"]) == {
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        }
        assert {"observedGeneration", "phase"} <= set(status["properties"])


SPECS_KVCLUSTER = [
    {},
    {"replicas": 5, "replicationFactor": 5},
    {"consistency": {"read": "one"}, "storage": {"storageClassName": "fast"}},
    {
        "scheduling": {"tolerations": [{"key": "k", "operator": "Exists"}]},
        "tracing": {"serviceName": "x"},
    },
]
SPECS_PIPELINE = [
    {},
    {"sampling": {"mode": "head", "ratio": 0.5}},
    {
        "sampling": {
            "mode": "retroactive",
            "retroactive": {"bufferBytes": 1 << 20, "bufferAge": "2s"},
        }
    },
    {"collector": {"replicas": 3, "batch": {"timeout": "1s"}}},
    {"jaeger": {"storage": {"type": "badger"}, "tenancy": {"enabled": True, "tenants": ["a"]}}},
    {
        "exporters": {
            "otlp": [
                {"name": "vendor", "endpoint": "x:4317"},
                {"name": "other", "endpoint": "https://y", "protocol": "http", "tls": {}},
                {
                    "name": "third",
                    "endpoint": "z:4317",
                    "tls": {"caSecret": {"name": "ca", "key": "ca.crt"}},
                    "secretHeaders": [
                        {"name": "authorization", "secretKeyRef": {"name": "s", "key": "k"}}
                    ],
                },
            ]
        }
    },
    {"redaction": {"blockedValues": ["secret"]}, "receivers": {"zipkin": {"enabled": True}}},
]


class TestDefaultsMatchSchema:
    @pytest.mark.parametrize("spec", SPECS_KVCLUSTER)
    def test_kvcluster(self, spec: dict[str, Any]) -> None:
        assert apply_defaults_kvcluster(spec) == schema_default(spec_schema("kvclusters"), spec)

    @pytest.mark.parametrize("spec", SPECS_PIPELINE)
    def test_pipeline(self, spec: dict[str, Any]) -> None:
        assert apply_defaults_pipeline(spec) == schema_default(
            spec_schema("tracingpipelines"), spec
        )

    @pytest.mark.parametrize("spec", SPECS_KVCLUSTER)
    def test_typed_kvcluster(self, spec: dict[str, Any]) -> None:
        """The typed parse of what the API server would store (every default written out)
        equals the typed parse of the spec as written."""
        assert parse_kvcluster(spec) == parse_kvcluster(
            schema_default(spec_schema("kvclusters"), spec)
        )

    @pytest.mark.parametrize("spec", SPECS_PIPELINE)
    def test_typed_pipeline(self, spec: dict[str, Any]) -> None:
        assert parse_pipeline(spec) == parse_pipeline(
            schema_default(spec_schema("tracingpipelines"), spec)
        )

    def test_spec_itself_defaults_to_an_object(self) -> None:
        for plural in PLURALS:
            assert spec_schema(plural)["default"] == {}
        assert apply_defaults_kvcluster(None) == schema_default(spec_schema("kvclusters"), {})

    def test_defaults_do_not_mutate_input(self) -> None:
        spec: dict[str, Any] = {"consistency": {}}
        apply_defaults_kvcluster(spec)
        assert spec == {"consistency": {}}

    @pytest.mark.parametrize(
        ("plural", "path", "value"),
        [
            ("tracingpipelines", ("sampling", "mode"), "production"),
            ("tracingpipelines", ("sampling", "latencyThreshold"), "500ms"),
            ("tracingpipelines", ("sampling", "ratio"), 0.1),
        ],
    )
    def test_documented_defaults(self, plural: str, path: tuple[str, ...], value: Any) -> None:
        spec = schema_default(spec_schema(plural), {})
        for key in path:
            spec = spec[key]
        assert spec == value


@pytest.mark.parametrize(
    ("plural", "path", "flag", "builtin"),
    [
        ("kvclusters", ("image",), "--kvnode-image", KVNODE_IMAGE),
        ("tracingpipelines", ("collector", "image"), "--collector-image", COLLECTOR_IMAGE),
        ("tracingpipelines", ("jaeger", "image"), "--jaeger-image", JAEGER_IMAGE),
        (
            "tracingpipelines",
            ("metrics", "prometheus", "image"),
            "--prometheus-image",
            PROMETHEUS_IMAGE,
        ),
    ],
)
def test_images_have_no_schema_default_and_name_the_operators(
    plural: str, path: tuple[str, ...], flag: str, builtin: str
) -> None:
    """An image the API server defaulted would be stored in the object and never follow the
    operator's image flag (a mirror, an upgrade): the schema leaves it unset and says which
    flag and built-in image apply."""
    schema = spec_schema(plural)
    for key in path:
        schema = schema["properties"][key]
    assert "default" not in schema
    description = " ".join(schema["description"].split())
    assert flag in description and builtin in description, description
