"""kvtrace top: the PromQL it asks, the report it assembles and the table it prints."""

from __future__ import annotations

from typing import Any

import pytest

from kvtrace.inspect import top

pytestmark = pytest.mark.unit


def sample(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1.0, str(value)]}


def fake_query(expr: str) -> list[dict[str, Any]]:
    """A Prometheus that knows two operations, one member and the collector's counters."""
    if "otelcol_receiver_accepted" in expr:
        return [sample(120.0)]
    if "otelcol_" in expr:
        return [sample(0.0)]
    member = "kvstore_member_id" in expr
    if expr.startswith("histogram_quantile(0.99"):
        return (
            [sample(12.5, kvstore_member_id="orders-0")]
            if member
            else [
                sample(12.5, kvstore_operation="write", kvstore_consistency="quorum"),
                sample(float("nan"), kvstore_operation="read", kvstore_consistency="one"),
            ]
        )
    if expr.startswith("histogram_quantile"):
        return []
    if "STATUS_CODE_ERROR" in expr:
        return (
            [sample(1.0, kvstore_member_id="orders-0")]
            if member
            else [sample(1.0, kvstore_operation="write", kvstore_consistency="quorum")]
        )
    return (
        [sample(10.0, kvstore_member_id="orders-0")]
        if member
        else [
            sample(8.0, kvstore_operation="write", kvstore_consistency="quorum"),
            sample(2.0, kvstore_operation="read", kvstore_consistency="one"),
        ]
    )


def test_queries_read_client_operations_of_the_spanmetrics() -> None:
    exprs = top.queries("2m")
    assert exprs["operations"]["rate"] == (
        "sum by (kvstore_operation, kvstore_consistency) "
        '(rate(traces_span_metrics_calls_total{span_kind="SPAN_KIND_SERVER", '
        'kvstore_operation=~"read|write|delete"}[2m]))'
    )
    assert "by (kvstore_member_id, le)" in exprs["members"]["p95"]
    assert set(exprs["collector"]) == {"accepted", "refused", "dropped"}


def test_report_and_table() -> None:
    report = top.fetch(fake_query, "1m")
    write, read = (
        next(r for r in report["operations"] if r["kvstore_operation"] == op)
        for op in ("write", "read")
    )
    assert (
        write["rate"] == 8.0
        and write["error_ratio"] == pytest.approx(0.125)
        and write["p99"] == 12.5
    )
    assert read["error_ratio"] == 0.0 and read["p99"] is None  # NaN (no samples) is shown as "-"
    assert report["members"] == [
        {
            "kvstore_member_id": "orders-0",
            "rate": 10.0,
            "error_ratio": 0.1,
            "p50": None,
            "p95": None,
            "p99": 12.5,
        }
    ]
    assert report["collector"] == {"accepted": 120.0, "refused": 0.0, "dropped": 0.0}
    text = top.render_table(report, "1m")
    assert "write      quorum       8.00   12.5%" in text
    assert "orders-0  10.00  10.0%" in text
    assert "accepted 120.0  refused 0.0  dropped 0.0" in text


def test_empty_store_says_so() -> None:
    report = top.fetch(lambda expr: [], "1m")
    assert "(no KV operations in the window)" in top.render_table(report, "1m")
