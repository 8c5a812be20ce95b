"""The typed spec (kvtrace_operator.spec): parse applies the CRD defaults once, reads every
field of the schema, and turns a value of the wrong type into a SpecError naming its path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from render_testlib import spec_schema
from test_crd_schemas import walk

from kvtrace_operator.spec import (
    Duration,
    Quantity,
    SpecError,
    parse_kvcluster,
    parse_pipeline,
)
from kvtrace_operator.spec.durations import DURATION_PATTERN

pytestmark = pytest.mark.unit

PARSERS = {"kvclusters": parse_kvcluster, "tracingpipelines": parse_pipeline}
WRONG = {"string": 5, "integer": "x", "number": "x", "boolean": "x"}


def sample(schema: dict[str, Any]) -> Any:
    """A small valid value of ``schema``: its required properties only."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: sample(props[name]) for name in schema.get("required", [])}
    if kind == "array":
        return []
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("pattern") == DURATION_PATTERN:
        return "1s"
    return {"string": "a", "integer": 1, "number": 1, "boolean": True}.get(kind, "a")


def set_at(spec: dict[str, Any], schema: dict[str, Any], path: str, value: Any) -> str:
    """Put ``value`` at the schema path ``path`` (``.a.b[].c``) of ``spec``, creating objects
    and one-element lists on the way; the field path the parse reports for it."""
    node, reported = spec, "spec"
    parts = path.strip(".").replace("[]", ".[]").split(".")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "[]":
            continue
        schema = schema["properties"][part]
        reported += f".{part}"
        if last:
            node[part] = value
        elif parts[index + 1] == "[]":
            item = sample(schema["items"])
            node.setdefault(part, [item])
            node, schema, reported = node[part][0], schema["items"], reported + "[0]"
        else:
            node = node.setdefault(part, sample(schema))
    return reported


def scalar_paths(plural: str) -> list[str]:
    """Every scalar field of the schema the parse types (not the Kubernetes values it copies
    verbatim: resources, affinity, tolerations, maps of strings)."""
    verbatim = ("resources", "affinity", "tolerations", "topologySpreadConstraints", "{}")
    return [
        path
        for path, schema in walk(spec_schema(plural))
        if schema.get("type") in WRONG
        and not path.endswith("[]")
        and not any(part in path for part in verbatim)
    ]


class TestEveryFieldIsRead:
    @pytest.mark.parametrize(
        ("plural", "path"),
        [(plural, path) for plural in PARSERS for path in scalar_paths(plural)],
        ids=lambda item: item,
    )
    def test_wrong_type_names_the_field(self, plural: str, path: str) -> None:
        schema = spec_schema(plural)
        wrong = WRONG[dict(walk(schema))[path]["type"]]
        spec: dict[str, Any] = {}
        field = set_at(spec, schema, path, wrong)
        with pytest.raises(SpecError) as caught:
            PARSERS[plural](spec)
        assert caught.value.field == field
        assert "expected" in caught.value.message


ODD = [None, 5, 2.5, "x", [], {}, True, [1], {"a": 1}, ["x"], [{"name": 3}]]


class TestOddDocumentsNeverCrash:
    @pytest.mark.parametrize("value", ODD, ids=repr)
    @pytest.mark.parametrize("plural", PARSERS)
    def test_any_value_anywhere(self, plural: str, value: Any) -> None:
        """Every property of the schema (objects and lists too) with each odd value: a typed
        spec or a SpecError under ``spec``, never another exception."""
        schema = spec_schema(plural)
        for path, _ in list(walk(schema))[1:]:
            if path.endswith("[]") or "{}" in path:
                continue
            spec: dict[str, Any] = {}
            set_at(spec, schema, path, copy.deepcopy(value))
            try:
                PARSERS[plural](spec)
            except SpecError as error:
                assert error.field.startswith("spec"), (path, error)

    @pytest.mark.parametrize("spec", [[], "x", 5])
    def test_spec_not_an_object(self, spec: Any) -> None:
        for parse in PARSERS.values():
            with pytest.raises(SpecError, match="^spec: expected an object"):
                parse(spec)


class TestTypedValues:
    def test_kvcluster_defaults(self) -> None:
        spec = parse_kvcluster(None)
        assert (spec.replicas, spec.replication_factor, spec.image) == (3, 3, None)
        assert spec.anti_entropy_interval == Duration(
            "10m", 600 * 10**9, "spec.antiEntropy.interval"
        )
        assert spec.storage.size == Quantity("1Gi", 2**30)
        assert spec.security.tls.renew_before.nanos == 720 * 3600 * 10**9
        assert spec.pipeline_name is None and spec.security.auth.clients == ()

    def test_pipeline_values(self) -> None:
        spec = parse_pipeline(
            {
                "sampling": {"mode": "head", "latencyThreshold": "1h30m", "keepErrors": False},
                "jaeger": {"storage": {"size": "1.5G"}},
                "exporters": {"otlp": [{"name": "up", "endpoint": "up:4317"}]},
                "security": {"auth": {"consumers": [{"name": "app"}]}},
            }
        )
        assert spec.sampling.mode == "head" and spec.sampling.keep_errors is False
        assert spec.sampling.latency_threshold.nanos == 5400 * 10**9
        assert str(spec.sampling.latency_threshold) == "1h30m"
        assert spec.sampling.decision_wait.ms == 10_000
        assert spec.jaeger.storage.size.bytes == 1.5e9
        [exporter] = spec.exporters.otlp
        assert (exporter.protocol, exporter.insecure, exporter.secret_headers) == (
            "grpc",
            False,
            (),
        )
        assert [consumer.name for consumer in spec.security.auth.consumers] == ["app"]
        assert spec.sampling.keep_errors is not None
        assert parse_pipeline({}).sampling.keep_errors is None

    def test_parse_copies_what_it_keeps(self) -> None:
        tolerations = [{"key": "k", "operator": "Exists"}]
        spec = parse_kvcluster({"scheduling": {"tolerations": tolerations}})
        assert spec.scheduling.tolerations == tolerations
        assert spec.scheduling.tolerations is not tolerations

    def test_frozen(self) -> None:
        spec = parse_pipeline({})
        with pytest.raises(AttributeError):
            spec.sampling.ratio = 1.0  # type: ignore[misc]


class TestRulesOnTheTypedSpec:
    """The rules several modules used to re-derive from the dict, once on the typed spec."""

    @pytest.mark.parametrize(
        ("tls", "active", "every_hop"),
        [
            ({}, "managed", True),
            ({"enabled": False}, None, False),
            ({"secretName": "mine"}, "secret", False),
            ({"mode": "certManager", "issuerRef": {"name": "ca"}}, "certManager", True),
            ({"enabled": False, "secretName": "mine"}, None, False),
        ],
    )
    def test_tls_mode_in_force(
        self, tls: dict[str, Any], active: str | None, every_hop: bool
    ) -> None:
        for parse in PARSERS.values():
            settings = parse({"security": {"tls": tls}}).security.tls
            assert (settings.active_mode, settings.every_hop) == (active, every_hop)

    def test_chosen_mode_whether_or_not_enabled(self) -> None:
        settings = parse_pipeline({"security": {"tls": {"enabled": False, "secretName": "s"}}})
        assert settings.security.tls.chosen_mode == "secret"

    @pytest.mark.parametrize(
        ("metrics", "deploys"),
        [
            ({}, True),
            ({"enabled": False}, False),
            ({"external": {"url": "http://prom:9090"}}, False),
            ({"enabled": False, "external": {"url": "http://prom:9090"}}, False),
        ],
    )
    def test_the_operator_deploys_prometheus(self, metrics: dict[str, Any], deploys: bool) -> None:
        assert parse_pipeline({"metrics": metrics}).metrics.deploys_prometheus is deploys

    def test_required_text_the_validator_explains_is_empty_when_missing(self) -> None:
        """An exporter without endpoint parses; render.validate names the field in its words."""
        [exporter] = parse_pipeline({"exporters": {"otlp": [{"name": "up"}]}}).exporters.otlp
        assert exporter.endpoint == ""
        with pytest.raises(
            SpecError, match=r"^spec.exporters.otlp\[0\].endpoint: expected a string"
        ):
            parse_pipeline({"exporters": {"otlp": [{"name": "up", "endpoint": 4317}]}})
