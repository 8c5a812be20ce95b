"""Same input, same bytes: rendering is pure and deterministic."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from render_testlib import kvcluster, pipeline

from kvtrace_operator.render import render_all, render_collector_config, render_jaeger_config
from kvtrace_operator.render.output import dump_all

pytestmark = pytest.mark.unit

INPUTS: list[list[dict[str, Any]]] = [
    [kvcluster()],
    [kvcluster(tracing={"pipelineRef": {"name": "traces"}}), pipeline()],
    [pipeline(collector={"replicas": 4}, jaeger={"storage": {"type": "badger"}})],
    [
        pipeline(
            sampling={"mode": "head"},
            exporters={"otlp": [{"name": "v", "endpoint": "x:1", "headers": {"b": "1", "a": "2"}}]},
        )
    ],
]


@pytest.mark.parametrize("resources", INPUTS)
class TestDeterminism:
    def test_render_twice_identical_yaml(self, resources: list[dict[str, Any]]) -> None:
        assert dump_all(render_all(resources)) == dump_all(render_all(copy.deepcopy(resources)))

    def test_input_not_mutated(self, resources: list[dict[str, Any]]) -> None:
        before = copy.deepcopy(resources)
        render_all(resources)
        assert resources == before

    def test_configs_stable(self, resources: list[dict[str, Any]]) -> None:
        for resource in resources:
            if resource["kind"] == "TracingPipeline":
                assert render_collector_config(resource) == render_collector_config(
                    copy.deepcopy(resource)
                )
                assert render_jaeger_config(resource) == render_jaeger_config(
                    copy.deepcopy(resource)
                )
