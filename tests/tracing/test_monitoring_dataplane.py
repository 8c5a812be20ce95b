"""kvtrace's Grafana dashboards and alert rules against the real Prometheus, fed by the real
collector (with the span metrics connectors), Jaeger and KV nodes through the rendered stack:

- after load (a traced client's writes, ordinary and failing writes), every query of every
  dashboard panel returns data from the pipeline's Prometheus (Grafana is not at hand: its
  ``$__rate_interval`` is replaced by 1m);
- the error ratio alert fires while failing writes go on, and stopping two of three members
  fires KVQuorumLost and KVMemberDown, in that Prometheus, evaluating the rendered rules.

About 90-150 s. Security off: the traced client exports without the pipeline's token.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from tracing_stack import Stack, flush, traced_client_writes, workload

from kvtrace.devstack.prometheus import Prometheus
from kvtrace.devstack.pytest_plugin import poll
from kvtrace_operator.render.monitoring import dashboard, dashboard_names, dashboard_queries

pytestmark = pytest.mark.dataplane

SPEC = {
    "sampling": {"mode": "production", "ratio": 0.5, "decisionWait": "2s"},
    "metrics": {"prometheus": {"scrapeInterval": "1s"}},
    "security": {"auth": {"enabled": False}, "tls": {"enabled": False}},
}


def firing(prom: Prometheus) -> set[str]:
    return {a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"}


def test_every_dashboard_query_returns_data_and_alerts_fire(
    trace_stack: Callable[..., Stack],
) -> None:
    stack = trace_stack(SPEC, faults="error:fail/", prometheus=True)
    prom = stack.prometheus
    assert prom is not None
    traced_client_writes(
        stack, [f"norm/dash-{i}" for i in range(30)] + [f"fail/dash-{i}" for i in range(6)]
    )
    # Load in rounds of 20 ordinary and 4 failing writes (17%: above KVErrorRatioHigh's 5%)
    # until that alert fires: the error counts must grow across several connector flushes
    # (15 s) for a rate. Bounded: at most 150 s, about 50 rounds.
    rounds = itertools.count()

    def load_round_then_firing() -> bool:
        workload(stack, normal=20, errors=4, slow=0, seed=next(rounds))
        return "KVErrorRatioHigh" in firing(prom)

    poll(
        load_round_then_firing,
        timeout=150,
        interval=3,
        message=f"KVErrorRatioHigh firing under load (firing: {firing(prom)})",
    )
    flush(stack, "fail/marker-")

    queries = [
        (name, title, expr.replace("$__rate_interval", "1m"))
        for name in dashboard_names()
        for title, expr in dashboard_queries(dashboard(name))
    ]
    assert len(dashboard_names()) == 4 and len(queries) >= 20

    def empty() -> list[str]:
        return [
            f"{name} / {title}: {expr}" for name, title, expr in queries if not prom.query(expr)
        ]

    poll(
        lambda: not empty(),
        timeout=120,
        interval=3,
        message=f"dashboard queries without data: {empty()}",
    )

    # Two of three members stop: their scrapes fail, KVQuorumLost fires (for: 4 intervals).
    assert not {"KVQuorumLost", "KVMemberDown"} & firing(prom)
    for node in stack.nodes[1:]:
        assert node.process is not None
        node.process.stop(timeout=10)
    poll(
        lambda: {"KVQuorumLost", "KVMemberDown"} <= firing(prom),
        timeout=60,
        interval=1,
        message=f"KVQuorumLost firing (firing: {firing(prom)})",
    )
