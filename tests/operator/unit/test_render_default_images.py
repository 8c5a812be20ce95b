"""The operator-wide default images (render/images.py ``Images``; `kvtrace operator run
--kvnode-image/--collector-image/--jaeger-image/--prometheus-image/--python-agent-image/
--java-agent-image`, each with its env variable): a resource that names no image runs the
operator's, one that names its own keeps it, an injected pod's init containers run the agent
images, and `kvtrace render` takes the same flags."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest
import yaml

from kvtrace_operator import cli
from kvtrace_operator.main import handler_options
from kvtrace_operator.render import render_all
from kvtrace_operator.render.images import (
    COLLECTOR_IMAGE,
    DEFAULT_IMAGES,
    JAEGER_IMAGE,
    KVNODE_IMAGE,
    PROMETHEUS_IMAGE,
    Images,
    images_from_args,
    pipeline_images,
)
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

MIRROR = Images(
    kvnode="mirror.example:5000/team/kvnode:0.1.0",
    collector="mirror.example:5000/team/otelcol-kvtrace:0.161.0",
    jaeger="mirror.example:5000/team/jaeger:2.13.0",
    prometheus="mirror.example:5000/team/prometheus@sha256:" + "ab" * 32,
    query_proxy="mirror.example:5000/team/kvtrace-operator:0.1.0",
    python_agent="mirror.example:5000/team/autoinstrumentation-python:0.66b1",
    java_agent="mirror.example:5000/team/autoinstrumentation-java@sha256:" + "cd" * 32,
)


def resources(**specs: dict[str, Any]) -> list[dict[str, Any]]:
    """A pipeline with metrics and bearer query auth (so every image is rendered) and a
    cluster traced by it; ``specs`` adds to their specs."""
    pipeline = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store", "uid": "u-tp"},
        "spec": {
            "metrics": {"enabled": True},
            "jaeger": {"query": {"auth": {"mode": "bearer"}}},
            **specs.get("pipeline", {}),
        },
    }
    cluster = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv", "namespace": "store", "uid": "u-kv"},
        "spec": {"tracing": {"pipelineRef": {"name": "traces"}}, **specs.get("cluster", {})},
    }
    return [pipeline, cluster]


def images_by_container(objects: list[dict[str, Any]]) -> dict[str, str]:
    """``KIND/NAME/CONTAINER`` -> image of every workload container."""
    found = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            pod = obj["spec"]["template"]["spec"]
            for container in pod["containers"]:
                key = f"{obj['kind']}/{obj['metadata']['name']}/{container['name']}"
                found[key] = container["image"]
    return found


def expected(images: Images) -> dict[str, str]:
    return {
        "StatefulSet/kv/kvnode": images.kvnode,
        "Deployment/traces-collector/otelcol": images.collector,
        "Deployment/traces-jaeger/jaeger": images.jaeger,
        "Deployment/traces-jaeger/query-proxy": images.query_proxy,
        "Deployment/traces-prometheus/prometheus": images.prometheus,
    }


def test_the_built_in_defaults_are_render_images_constants() -> None:
    assert (DEFAULT_IMAGES.kvnode, DEFAULT_IMAGES.collector) == (KVNODE_IMAGE, COLLECTOR_IMAGE)
    assert (DEFAULT_IMAGES.jaeger, DEFAULT_IMAGES.prometheus) == (JAEGER_IMAGE, PROMETHEUS_IMAGE)
    found = images_by_container(render_all(resources()))
    assert {key: found.get(key) for key in expected(DEFAULT_IMAGES)} == expected(DEFAULT_IMAGES)


def test_resources_without_images_run_the_operators_defaults() -> None:
    found = images_by_container(render_all(resources(), images=MIRROR))
    assert {key: found.get(key) for key in expected(MIRROR)} == expected(MIRROR)
    # Nothing rendered still names a built-in default.
    assert not set(found.values()) & {KVNODE_IMAGE, COLLECTOR_IMAGE, JAEGER_IMAGE}


def test_a_resources_own_image_wins() -> None:
    own = resources(
        cluster={"image": "own/kvnode:1"},
        pipeline={
            "collector": {"image": "own/otelcol:1"},
            "jaeger": {"image": "own/jaeger:1", "query": {"auth": {"mode": "bearer"}}},
            "metrics": {"enabled": True, "prometheus": {"image": "own/prometheus:1"}},
        },
    )
    found = images_by_container(render_all(own, images=MIRROR))
    assert found["StatefulSet/kv/kvnode"] == "own/kvnode:1"
    assert found["Deployment/traces-collector/otelcol"] == "own/otelcol:1"
    assert found["Deployment/traces-jaeger/jaeger"] == "own/jaeger:1"
    assert found["Deployment/traces-prometheus/prometheus"] == "own/prometheus:1"
    assert found["Deployment/traces-jaeger/query-proxy"] == MIRROR.query_proxy


def test_pipeline_images_takes_the_pipelines_own_else_the_operators() -> None:
    spec = parse_pipeline(
        {
            "collector": {"image": "own/otelcol:1"},
            "jaeger": {"query": {"auth": {"mode": "bearer", "proxyImage": "own/proxy:1"}}},
        }
    )
    assert pipeline_images(spec, MIRROR) == dataclasses.replace(
        MIRROR, collector="own/otelcol:1", query_proxy="own/proxy:1"
    )
    assert pipeline_images(parse_pipeline({}), MIRROR) == MIRROR


def parse(argv: list[str], command: str = "operator") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kvtrace")
    cli.register(parser.add_subparsers(dest="command"))
    prefix = ["operator", "run"] if command == "operator" else ["render", "-f", "x.yaml"]
    return parser.parse_args([*prefix, *argv])


FLAGS = [
    ("kvnode", "--kvnode-image", "KVTRACE_KVNODE_IMAGE"),
    ("collector", "--collector-image", "KVTRACE_COLLECTOR_IMAGE"),
    ("jaeger", "--jaeger-image", "KVTRACE_JAEGER_IMAGE"),
    ("prometheus", "--prometheus-image", "KVTRACE_PROMETHEUS_IMAGE"),
    ("query_proxy", "--query-proxy-image", "KVTRACE_QUERY_PROXY_IMAGE"),
    ("python_agent", "--python-agent-image", "KVTRACE_PYTHON_AGENT_IMAGE"),
    ("java_agent", "--java-agent-image", "KVTRACE_JAVA_AGENT_IMAGE"),
]


@pytest.fixture(autouse=True)
def _no_image_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, _, env in FLAGS:
        monkeypatch.delenv(env, raising=False)


def test_without_flags_the_operator_uses_the_built_in_images() -> None:
    assert handler_options(parse([])).images == DEFAULT_IMAGES


@pytest.mark.parametrize(("field", "flag", "env"), FLAGS)
def test_each_flag_and_its_env_variable_set_one_image(
    field: str, flag: str, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = getattr(MIRROR, field)
    options = handler_options(parse([f"{flag}={chosen}"]))
    assert getattr(options.images, field) == chosen
    others = {f for f, _, _ in FLAGS} - {field}
    assert all(getattr(options.images, f) == getattr(DEFAULT_IMAGES, f) for f in others)
    monkeypatch.setenv(env, f" {chosen} ")
    assert getattr(handler_options(parse([])).images, field) == chosen
    assert getattr(handler_options(parse([f"{flag}=flag/wins:1"])).images, field) == ("flag/wins:1")


@pytest.mark.parametrize(("field", "flag", "env"), FLAGS)
@pytest.mark.parametrize("value", ["", "  ", "reg/kvnode: 1"])
def test_a_bad_image_is_refused_naming_the_flag_and_the_env(
    field: str, flag: str, env: str, value: str, capsys: Any
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse([f"{flag}={value}"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {flag}: expected an image reference such as" in error, error
    assert f"(flag {flag} or env {env})" in error, error


def test_kvtrace_render_takes_the_same_flags(tmp_path: Any, capsys: Any) -> None:
    source = tmp_path / "resources.yaml"
    source.write_text(yaml.safe_dump_all(resources()))
    argv = [f"{flag}={getattr(MIRROR, field)}" for field, flag, _ in FLAGS]
    args = parse(argv, command="render")
    assert images_from_args(args) == MIRROR
    args.files = [str(source)]
    assert args.func(args) == 0
    found = images_by_container(list(yaml.safe_load_all(capsys.readouterr().out)))
    assert {key: found.get(key) for key in expected(MIRROR)} == expected(MIRROR)
