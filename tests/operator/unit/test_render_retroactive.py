"""``spec.sampling.mode: retroactive`` rendered: the SDK's ratio sampler, the KV nodes' flags,
no tail sampling (and the collector memory that saves), validation and status."""

from __future__ import annotations

from typing import Any

import pytest
from render_testlib import by_kind, env_map, kvcluster, one, pipeline

from kvnode.process.config import OPTIONS, resolve
from kvtrace_operator.render import (
    otel_environment,
    render_collector_config,
    render_kvcluster,
    render_pipeline,
)
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.sizing import collector_working_set, tail_sampling_bytes
from kvtrace_operator.render.status import sampling_status
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

RETRO = {"mode": "retroactive", "ratio": 0.25, "latencyThreshold": "300ms"}


def node_container(spec: dict[str, Any]) -> dict[str, Any]:
    objects = render_kvcluster(kvcluster(), pipeline(sampling=spec))
    (sts,) = by_kind(objects, "StatefulSet")
    return dict(sts["spec"]["template"]["spec"]["containers"][0])


def test_nodes_get_the_ratio_sampler_and_the_retroactive_flags() -> None:
    node = node_container(
        {**RETRO, "retroactive": {"bufferBytes": 8 << 20, "bufferAge": "2s500ms"}}
    )
    variables = env_map(node)
    assert variables["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert variables["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert not [name for name in variables if name.startswith("KVNODE_")], (
        "the OTel environment stays standard: the mode reaches the node as flags"
    )
    flags = [a for a in node["args"] if a.startswith("--trace-")]
    assert flags == [
        "--trace-retroactive=true",
        f"--trace-buffer-size={8 << 20}",
        "--trace-buffer-age=2500ms",
        "--trace-latency-threshold=300ms",
    ]
    # the node accepts exactly what is rendered
    parsed = resolve(
        {
            o.dest: v
            for o in OPTIONS
            for a in flags
            if (v := a.partition("=")[2]) and a.startswith(o.flag + "=")
        },
        {"KVNODE_PEERS": "a=127.0.0.1:7071", "KVNODE_ID": "a"},
    )
    assert (parsed.trace_retroactive, parsed.trace_buffer_size, parsed.trace_buffer_age) == (
        True,
        8 << 20,
        2.5,
    )
    assert parsed.trace_latency_threshold == pytest.approx(0.3)


def test_the_flags_are_in_the_settings_the_pods_roll_on() -> None:
    objects = render_kvcluster(kvcluster(), pipeline(sampling=RETRO))
    settings = one(objects, "ConfigMap")["data"]["settings"]
    assert "KVNODE_TRACE_RETROACTIVE=true\n" in settings
    assert "KVNODE_TRACE_BUFFER_SIZE=33554432\n" in settings  # the default, 32 MiB


@pytest.mark.parametrize("mode", ["production", "head", "development"])
def test_other_modes_render_no_retroactive_flag(mode: str) -> None:
    node = node_container({"mode": mode})
    assert not [a for a in node["args"] if a.startswith("--trace-retro")]


def test_no_tail_sampling_and_the_collector_memory_it_saves() -> None:
    tp = pipeline(sampling=RETRO)
    config = render_collector_config(tp)
    assert "tail_sampling" not in config["processors"]
    assert all(
        "tail_sampling" not in p.get("processors", [])
        for p in config["service"]["pipelines"].values()
    )
    retro = parse_pipeline(tp["spec"])
    production = parse_pipeline({"sampling": {"mode": "production"}})
    saved = collector_working_set(production, True) - collector_working_set(retro, True)
    assert saved == tail_sampling_bytes(production) == 50000 * 4 * 1024  # ~195 MiB
    deployments = by_kind(render_pipeline(tp), "Deployment")
    assert len([d for d in deployments if "collector" in d["metadata"]["name"]]) == 1, (
        "no load-balancing tier: nothing needs whole traces in one collector"
    )


def test_status_says_what_the_mode_keeps() -> None:
    status = sampling_status(parse_pipeline({"sampling": RETRO}))
    assert status["sdkSampler"] == "parentbased_traceidratio"
    assert status["tailSampling"] is False
    assert "every failed operation" in status["note"] and "300ms" in status["note"]
    assert "lacks the caller's spans" in status["note"]


@pytest.mark.parametrize(
    ("sampling", "field", "words"),
    [
        ({**RETRO, "keepErrors": False}, "spec.sampling.keepErrors", "always keeps"),
        (
            {**RETRO, "retroactive": {"bufferAge": "300ms"}},
            "spec.sampling.retroactive.bufferAge",
            "more than spec.sampling.latencyThreshold",
        ),
        (
            {**RETRO, "retroactive": {"bufferAge": "61s"}},
            "spec.sampling.retroactive.bufferAge",
            "at most 60s",
        ),
        (
            {**RETRO, "retroactive": {"bufferAge": "50ms"}},
            "spec.sampling.retroactive.bufferAge",
            "100ms",
        ),
        (
            {**RETRO, "retroactive": {"bufferBytes": 1000}},
            "spec.sampling.retroactive.bufferBytes",
            "from 1048576 to 1073741824",
        ),
        (
            {"mode": "head", "retroactive": {"bufferBytes": "32Mi"}},
            "spec.sampling.retroactive.bufferBytes",
            "integer",
        ),
    ],
)
def test_bad_input_names_the_field(sampling: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        otel_environment(kvcluster(), pipeline(sampling=sampling))
    assert err.value.field == field and words in str(err.value), str(err.value)
