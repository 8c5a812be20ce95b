"""Default collector and Jaeger resources (render.sizing): derived from the pipeline, the
user's own values kept, and within the limits `kvtrace doctor` checks the same model with."""

from __future__ import annotations

from typing import Any

import pytest
from render_testlib import by_kind, pipeline

from kvtrace.inspect import doctor
from kvtrace_operator.render import render_pipeline, sizing
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit


def resources(tp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Deployment name -> its first container's resources."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["resources"]
        for d in by_kind(render_pipeline(tp), "Deployment")
    }


def mebibytes(quantity: str) -> int:
    assert quantity.endswith("Mi") or quantity.endswith("Gi"), quantity
    return int(quantity[:-2]) * (1024 if quantity.endswith("Gi") else 1)


class TestCollector:
    def test_production_holds_its_tail_sampling_buffer(self) -> None:
        found = resources(pipeline())["traces-collector"]
        # 128Mi process + 8192 spans x 1KiB batch + 50000 traces x 4 spans x 1KiB
        assert found == {
            "requests": {"cpu": "100m", "memory": "332Mi"},
            "limits": {"memory": "603Mi"},
        }

    def test_the_buffer_follows_num_traces(self) -> None:
        small = resources(pipeline(sampling={"numTraces": 10000}))["traces-collector"]
        assert small["requests"]["memory"] == "176Mi"  # 128 + 8 + 10000 x 4KiB (39.06Mi)
        assert mebibytes(small["limits"]["memory"]) < 603

    def test_without_tail_sampling_no_buffer(self) -> None:
        for spec in ({"sampling": {"mode": "development"}}, {"sampling": {"mode": "head"}}):
            assert resources(pipeline(**spec))["traces-collector"]["requests"]["memory"] == "136Mi"

    def test_two_tiers_only_the_sampling_tier_holds_traces(self) -> None:
        found = resources(pipeline(collector={"replicas": 3}))
        assert found["traces-collector"]["requests"]["memory"] == "136Mi"  # load balancing
        assert found["traces-collector-sampling"]["requests"]["memory"] == "332Mi"

    def test_the_limit_follows_the_memory_limiter(self) -> None:
        tight = pipeline(
            collector={"memoryLimiter": {"limitPercentage": 90, "spikeLimitPercentage": 10}}
        )
        assert resources(tight)["traces-collector"]["limits"]["memory"] == "415Mi"  # 331.3 / 0.8

    @pytest.mark.parametrize(
        "spec",
        [
            {},
            {"sampling": {"mode": "development"}},
            {"collector": {"replicas": 2}},
            {"sampling": {"numTraces": 200000}},
            {"collector": {"batch": {"sendBatchSize": 65536}}},
        ],
    )
    def test_the_doctor_finds_the_default_limit_sufficient(self, spec: dict[str, Any]) -> None:
        tp = pipeline(**spec)
        objects = render_pipeline(tp)
        configs = {
            cm["metadata"]["name"]: doctor._parse_config(cm)
            for cm in by_kind(objects, "ConfigMap")
            if cm["metadata"]["name"].startswith("traces-collector")
        }
        deployments = {d["metadata"]["name"]: d for d in by_kind(objects, "Deployment")}
        check = doctor.check_resources(configs, deployments, 3)
        assert check.status == "PASS", check


class TestJaeger:
    def test_memory_store_from_max_traces(self) -> None:
        found = resources(pipeline(jaeger={"storage": {"maxTraces": 10000}}))["traces-jaeger"]
        # 128Mi + 10000 traces x 4 spans x 1KiB = 167.06Mi; limit 1.5x
        assert found == {
            "requests": {"cpu": "100m", "memory": "168Mi"},
            "limits": {"memory": "251Mi"},
        }

    def test_badger_is_a_fixed_cache(self) -> None:
        found = resources(pipeline(jaeger={"storage": {"type": "badger", "maxTraces": 10}}))[
            "traces-jaeger"
        ]
        assert found["requests"]["memory"] == "640Mi" and found["limits"]["memory"] == "960Mi"


class TestTheUsersOwn:
    def test_a_resource_named_is_entirely_the_users(self) -> None:
        tp = pipeline(
            collector={"resources": {"limits": {"memory": "2Gi"}}},
            jaeger={"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
        )
        found = resources(tp)
        assert found["traces-collector"] == {
            "requests": {"cpu": "100m"},
            "limits": {"memory": "2Gi"},
        }
        assert found["traces-jaeger"] == {"requests": {"cpu": "1", "memory": "1Gi"}}

    def test_merged_keeps_other_resources_and_fields(self) -> None:
        user = {"requests": {"ephemeral-storage": "1Gi"}, "claims": [{"name": "x"}]}
        assert sizing.merged(user, {"requests": {"cpu": "100m"}, "limits": {"memory": "1Mi"}}) == {
            "requests": {"cpu": "100m", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "1Mi"},
            "claims": [{"name": "x"}],
        }

    def test_deterministic_and_pure(self) -> None:
        spec = parse_pipeline({})
        before = repr(spec)
        assert sizing.collector_resources(spec, True) == sizing.collector_resources(spec, True)
        assert repr(spec) == before
