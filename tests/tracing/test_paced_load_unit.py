"""The statistics the collector-outage test asserts on (tests/tracing/paced_load.py)."""

from __future__ import annotations

import math

import pytest
from paced_load import Phase, pooled, quantile, ratio_estimate

pytestmark = pytest.mark.unit


def test_quantile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order must not matter
    assert quantile(list(reversed(values)), 0.99) == 99.0
    assert quantile(values, 0.5) == 51.0  # rank round(0.5 * 99) = 50 (0-based)
    assert quantile(values, 0.0) == 1.0 and quantile(values, 1.0) == 100.0
    assert quantile([], 0.99) == 0.0


def test_pooled_quantile_is_over_all_phases_together() -> None:
    phases = [Phase("a", latencies=[0.001] * 99 + [1.0]), Phase("b", latencies=[0.002] * 100)]
    assert pooled(phases, 0.99) == 0.002
    assert pooled(phases, 1.0) == 1.0


def test_ratio_estimate_of_equal_rounds_is_exact() -> None:
    est = ratio_estimate([1.2] * 6)
    assert (
        math.isclose(est.point, 1.2) and math.isclose(est.low, 1.2) and math.isclose(est.high, 1.2)
    )


def test_ratio_estimate_bounds_use_students_t_on_the_logs() -> None:
    # logs ±0.1 around 0: mean 0, sample sd 0.1095 (n=6), t(0.95, 5) = 2.015
    est = ratio_estimate([math.exp(0.1), math.exp(-0.1)] * 3)
    margin = 2.015 * math.sqrt(0.06 / 5) / math.sqrt(6)
    assert math.isclose(est.point, 1.0)
    assert math.isclose(est.low, math.exp(-margin)) and math.isclose(est.high, math.exp(margin))


def test_a_consistent_slowdown_is_caught_and_noise_is_not() -> None:
    # every round 1.5x: the lower bound is far above 1.10, so the outage test fails
    assert ratio_estimate([1.45, 1.5, 1.55, 1.5, 1.48, 1.52]).low > 1.10
    # the spread of a loaded machine around 1.0 (docs/tracing.md run 0): the test passes
    assert ratio_estimate([1.717, 0.727, 1.475, 1.066, 0.765, 0.664]).low < 1.10
