"""The operator image the chart installs is also the default image of the pipelines'
``query-proxy`` sidecars: the chart passes its resolved image as ``--query-proxy-image``,
the real `kvtrace operator run` parser reads it into the handlers' options, and the render
puts it in the Jaeger pod (a pipeline's ``proxyImage`` still wins:
tests/security/test_security_query_access_proxy_unit.py)."""

from __future__ import annotations

from typing import Any

import pytest
from chartlib import operator_args, parse_operator_args, template

from kvtrace_operator import cli
from kvtrace_operator.main import handler_options
from kvtrace_operator.render import render_pipeline
from kvtrace_operator.render.images import OPERATOR_IMAGE, Images

pytestmark = pytest.mark.unit

MIRROR = ("image.repository=registry.internal:5000/mirror/kvtrace-operator", "image.tag=1.2.3-rc1")
DIGEST = "sha256:" + "3f" * 32
BEARER_PIPELINE = {
    "apiVersion": "kvtrace.dev/v1alpha1",
    "kind": "TracingPipeline",
    "metadata": {"name": "traces", "namespace": "store", "uid": "u-tp"},
    "spec": {"jaeger": {"query": {"auth": {"mode": "bearer"}}}},
}


def deployment_image(*sets: str) -> str:
    extra = [arg for setting in sets for arg in ("--set", setting)]
    deployment = next(o for o in template(*extra) if o["kind"] == "Deployment")
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def sidecar_image(proxy_image: str) -> str:
    [deployment] = [
        o
        for o in render_pipeline(BEARER_PIPELINE, images=Images(query_proxy=proxy_image))
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "traces-jaeger"
    ]
    [proxy] = [
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == "query-proxy"
    ]
    return str(proxy["image"])


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), OPERATOR_IMAGE),
        (MIRROR, "registry.internal:5000/mirror/kvtrace-operator:1.2.3-rc1"),
        (
            (*MIRROR, f"image.digest={DIGEST}"),
            f"registry.internal:5000/mirror/kvtrace-operator@{DIGEST}",
        ),  # pinned
    ],
)
def test_the_sidecar_runs_the_image_the_chart_runs_the_operator_with(
    sets: tuple[str, ...], expected: str
) -> None:
    assert deployment_image(*sets) == expected
    args = operator_args(*sets)
    assert [arg for arg in args if arg.startswith("--query-proxy-image")] == [
        f"--query-proxy-image={expected}"
    ]
    options = handler_options(parse_operator_args(args))
    assert options.images.query_proxy == expected
    assert sidecar_image(options.images.query_proxy) == expected


def test_the_flag_defaults_to_the_built_in_image_and_the_env_sets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(cli.QUERY_PROXY_IMAGE_ENV, raising=False)
    assert parse_operator_args([]).query_proxy_image == OPERATOR_IMAGE
    monkeypatch.setenv(cli.QUERY_PROXY_IMAGE_ENV, " mirror.local/op@sha256:" + "a" * 64 + " ")
    assert parse_operator_args([]).query_proxy_image == "mirror.local/op@sha256:" + "a" * 64
    assert (
        parse_operator_args(["--query-proxy-image=r/o:2"]).query_proxy_image == "r/o:2"
    )  # the flag wins


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--query-proxy-image="], None),
        (["--query-proxy-image", "  "], None),
        (["--query-proxy-image=r/o: 2"], None),
        ([], ""),
    ],
)
def test_an_empty_image_is_refused_naming_the_flag_and_the_env(
    argv: list[str], env: str | None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv(cli.QUERY_PROXY_IMAGE_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(cli.QUERY_PROXY_IMAGE_ENV, env)
    with pytest.raises(SystemExit) as exited:
        parse_operator_args(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert (
        "argument --query-proxy-image: expected an image reference such as "
        f"{OPERATOR_IMAGE}, got " in error
    )
    assert "(flag --query-proxy-image or env KVTRACE_QUERY_PROXY_IMAGE)" in error
