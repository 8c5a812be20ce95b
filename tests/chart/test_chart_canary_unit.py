"""The chart's canary and operator-tracing values (docs/operator.md) reach the operator's arguments,
and the rendered arguments parse with the real `kvtrace operator run` parser (the schema's
refusals of bad values are in test_chart_unit.py)."""

from __future__ import annotations

import pytest
from chartlib import operator_args
from chartlib import parse_operator_args as parse

pytestmark = pytest.mark.unit


def test_defaults_run_the_canary_every_minute_and_trace_nothing() -> None:
    args = operator_args()
    assert "--canary-interval=60s" in args and "--canary-timeout=20s" in args
    assert not any(arg.startswith("--trace-pipeline") for arg in args)
    parsed = parse(args)
    assert (parsed.canary_interval, parsed.canary_timeout, parsed.trace_pipeline) == (
        60.0,
        20.0,
        None,
    )


def test_values_reach_the_flags() -> None:
    args = operator_args(
        "canary.interval=off", "canary.timeout=45s", "tracing.pipeline=observability/traces"
    )
    assert {
        "--canary-interval=off",
        "--canary-timeout=45s",
        "--trace-pipeline=observability/traces",
    } <= set(args)
    parsed = parse(args)
    assert (parsed.canary_interval, parsed.canary_timeout, parsed.trace_pipeline) == (
        0.0,
        45.0,
        ("observability", "traces"),
    )
