"""spec.jaeger.archive: Jaeger's archive storage (the UI's Archive Trace button), rendered as a
second ``jaeger_storage`` backend with its own bound, refused naming the field when wrong by
``kvtrace render`` (the renderer's checks and the CRD's schema and CEL rules alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from render_testlib import one, pipeline
from test_render_strict import errors_of, run

from kvtrace_operator.render import SpecError, render_pipeline, validate_pipeline
from kvtrace_operator.render.jaeger import render_jaeger_config, retention
from kvtrace_operator.render.sizing import jaeger_resources
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

BADGER = {"type": "badger", "retention": "72h"}


def extensions(**jaeger: Any) -> dict[str, Any]:
    config: dict[str, Any] = render_jaeger_config(pipeline(jaeger=jaeger))["extensions"]
    return config


def test_off_by_default_renders_no_archive_store() -> None:
    ext = extensions()
    assert list(ext["jaeger_storage"]["backends"]) == ["traces"]
    assert "traces_archive" not in ext["jaeger_query"]["storage"]


def test_memory_archive_is_a_second_memory_store_of_its_own_size() -> None:
    ext = extensions(storage={"maxTraces": 5000}, archive={"enabled": True, "maxTraces": 300})
    assert ext["jaeger_storage"]["backends"] == {
        "traces": {"memory": {"max_traces": 5000}},
        "archive": {"memory": {"max_traces": 300}},
    }
    assert ext["jaeger_query"]["storage"]["traces"] == "traces"
    assert ext["jaeger_query"]["storage"]["traces_archive"] == "archive"


def test_badger_archive_has_its_own_directory_and_ttl_on_the_same_volume() -> None:
    ext = extensions(storage=BADGER, archive={"enabled": True, "retention": "2160h"})
    backends = ext["jaeger_storage"]["backends"]
    assert backends["traces"]["badger"]["ttl"] == {"spans": "72h"}
    assert backends["archive"]["badger"] == {
        "directories": {"keys": "/badger/archive/keys", "values": "/badger/archive/values"},
        "ephemeral": False,
        "ttl": {"spans": "2160h"},
    }
    primary = set(backends["traces"]["badger"]["directories"].values())
    assert primary.isdisjoint(backends["archive"]["badger"]["directories"].values())
    # one PVC, mounted at /badger, holds both databases
    objects = render_pipeline(pipeline(jaeger={"storage": BADGER, "archive": {"enabled": True}}))
    pod = one(objects, "Deployment", "traces-jaeger")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"] == "/badger"
    assert len([o for o in objects if o["kind"] == "PersistentVolumeClaim"]) == 1


def test_memory_archive_adds_its_traces_to_jaegers_default_memory() -> None:
    def memory(**jaeger: Any) -> str:
        spec = parse_pipeline({"jaeger": jaeger})
        return str(jaeger_resources(spec)["requests"]["memory"])

    off = memory(storage={"maxTraces": 1000}, archive={"maxTraces": 1000})
    on = memory(storage={"maxTraces": 1000}, archive={"enabled": True, "maxTraces": 1000})
    primary_only = memory(storage={"maxTraces": 2000})
    assert off != on and on == primary_only  # 1000 + 1000 traces weigh as 2000
    badger_on = memory(storage=BADGER, archive={"enabled": True})
    assert int(badger_on.rstrip("Mi")) > int(memory(storage=BADGER).rstrip("Mi"))


@pytest.mark.parametrize(
    ("jaeger", "expected"),
    [
        ({}, {"traces": {"type": "memory", "maxTraces": 100000}, "archive": None}),
        (
            {"archive": {"enabled": True}},
            {
                "traces": {"type": "memory", "maxTraces": 100000},
                "archive": {"type": "memory", "maxTraces": 10000},
            },
        ),
        (
            {"storage": BADGER, "archive": {"enabled": True}},
            {
                "traces": {"type": "badger", "retention": "72h"},
                "archive": {"type": "badger", "retention": "720h"},
            },
        ),
    ],
)
def test_retention_of_both_stores(jaeger: dict[str, Any], expected: dict[str, Any]) -> None:
    assert retention(parse_pipeline({"jaeger": jaeger}).jaeger) == expected


BAD_ARCHIVES: list[tuple[dict[str, Any], str, str, str]] = [
    # (spec.jaeger, field, the renderer's words, the CRD's words); no words of the renderer:
    # the schema's check alone (types and unknown fields: the render reads what it passed)
    ({"archive": {"enabled": "yes"}}, "spec.jaeger.archive.enabled", "", "boolean"),
    (
        {"archive": {"maxTraces": 0}},
        "spec.jaeger.archive.maxTraces",
        "integer from 1 to 10000000",
        "greater than or equal to 1",
    ),
    (
        {"archive": {"maxTraces": 20_000_000}},
        "spec.jaeger.archive.maxTraces",
        "integer from 1 to 10000000",
        "less than or equal to 10000000",
    ),
    (
        {"archive": {"retention": "1 month"}},
        "spec.jaeger.archive.retention",
        "expected a duration",
        "should match",
    ),
    (
        {"archive": {"retention": "30s"}},
        "spec.jaeger.archive.retention",
        "at least 1m",
        "at least 1m",
    ),
    (
        {"storage": BADGER, "archive": {"enabled": True, "retention": "72h"}},
        "spec.jaeger.archive.retention",
        "longer than spec.jaeger.storage.retention (72h)",
        "must be longer than storage.retention with badger storage",
    ),
    ({"archive": {"keep": "forever"}}, "spec.jaeger.archive.keep", "", "unknown"),
]


@pytest.mark.parametrize(
    ("jaeger", "field", "ours", "crd"), BAD_ARCHIVES, ids=[b[1] + ":" + b[2] for b in BAD_ARCHIVES]
)
def test_bad_archive_is_refused_naming_the_field(
    jaeger: dict[str, Any], field: str, ours: str, crd: str
) -> None:
    resource = pipeline(jaeger=jaeger)
    errors = errors_of(resource)
    assert any(e.startswith(f"{field}:") and crd in e for e in errors), errors
    if not ours:
        return  # the schema's check alone
    with pytest.raises(SpecError) as caught:
        validate_pipeline(resource)
    assert caught.value.field == field and ours in str(caught.value), str(caught.value)


def test_kvtrace_render_refuses_a_bad_archive_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    bad = pipeline(jaeger={"storage": BADGER, "archive": {"enabled": True, "retention": "24h"}})
    path.write_text(yaml.safe_dump(bad))
    code, out, err = run(path)
    assert code != 0 and out == ""
    assert "spec.jaeger.archive.retention" in err and "longer than storage.retention" in err, err


@pytest.mark.parametrize(
    "jaeger",
    [
        {"archive": {"enabled": True, "maxTraces": 1}},
        {"storage": BADGER, "archive": {"enabled": True, "retention": "72h1s"}},
        # a memory primary keeps no time-based retention: the archive's is not compared
        {"storage": {"retention": "720h"}, "archive": {"enabled": True, "retention": "1h"}},
        # off: the archive's values are not compared with the primary's either
        {"storage": BADGER, "archive": {"retention": "1h"}},
    ],
)
def test_good_archives_are_accepted(jaeger: dict[str, Any]) -> None:
    resource = pipeline(jaeger=jaeger)
    validate_pipeline(resource)
    assert errors_of(resource) == []
