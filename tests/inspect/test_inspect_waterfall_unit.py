"""`kvtrace trace` / `kvtrace traces`: the waterfall drawn from span data (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from kvtrace.inspect import jaeger, waterfall
from kvtrace.inspect.errors import InspectError
from kvtrace.shared.jaeger_client import Span, Trace

pytestmark = pytest.mark.unit

T0 = 1_800_000_000_000_000_000
MS = 1_000_000


def span(
    span_id: str,
    parent: str,
    name: str,
    start_ms: float,
    end_ms: float,
    node: str = "kv-0",
    status: str = "UNSET",
    message: str = "",
    service: str = "kv",
) -> Span:
    return Span(
        trace_id="ab" * 16,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind="SERVER",
        service=service,
        start_ns=T0 + int(start_ms * MS),
        end_ns=T0 + int(end_ms * MS),
        attributes={},
        resource={"kvstore.member.id": node},
        status_code=status,
        status_message=message,
    )


def put_trace() -> Trace:
    return Trace(
        "ab" * 16,
        [
            span(
                "01",
                "",
                "PUT /v1/kv/{key}",
                0,
                40,
                status="ERROR",
                message="2 of 3 replicas answered",
            ),
            span("02", "01", "replicate kv-1", 2, 12),
            span("03", "02", "PUT /internal/kv", 4, 10, node="kv-1"),
            span("04", "01", "replicate kv-2", 2, 40, status="ERROR"),
            span(
                "05",
                "04",
                "PUT /internal/kv",
                5,
                39,
                node="kv-2",
                status="ERROR",
                message="disk full",
            ),
        ],
    )


def rows(text: str) -> list[str]:
    return text.splitlines()[2:]


def test_tree_order_and_prefixes() -> None:
    drawn = [(s.span_id, prefix) for s, prefix in waterfall.tree(put_trace().spans)]
    assert drawn == [("01", ""), ("02", "├─ "), ("03", "│  └─ "), ("04", "└─ "), ("05", "   └─ ")]


def test_waterfall_has_header_names_nodes_durations_status_and_bars_to_scale() -> None:
    text = waterfall.render_waterfall(put_trace(), width=40)
    lines = text.splitlines()
    assert lines[0].startswith("trace " + "ab" * 16 + "  kv: PUT /v1/kv/{key}")
    assert "40.0ms, 5 spans, 3 errors" in lines[0]
    assert lines[1].split()[:5] == ["SPAN", "SERVICE", "NODE", "DURATION", "STATUS"]
    assert lines[1].endswith("40.0ms|")
    root, rep1, call1, rep2, call2 = rows(text)[:5]
    assert "PUT /v1/kv/{key}" in root and "ERROR" in root and "kv-0" in root
    assert "│  └─ PUT /internal/kv" in call1 and " kv-1 " in call1 and "6.0ms" in call1
    bars = {
        name: line[line.index("|") + 1 : line.rindex("|")]
        for name, line in (
            ("root", root),
            ("rep1", rep1),
            ("call1", call1),
            ("rep2", rep2),
            ("call2", call2),
        )
    }
    assert all(len(b) == 40 for b in bars.values())
    assert bars["root"] == "▓" * 40  # the whole trace, in error
    assert bars["rep1"] == "  " + "█" * 10 + " " * 28  # 2ms..12ms of 40ms on 40 cells
    assert bars["call1"].index("█") == 4 and bars["call1"].count("█") == 6
    assert bars["call2"].count("▓") == 34
    assert "  ! PUT /internal/kv (kv-2): disk full" in text
    assert "  ! PUT /v1/kv/{key} (kv-0): 2 of 3 replicas answered" in text


def test_short_spans_get_at_least_one_cell_and_ascii_mode() -> None:
    trace = Trace(
        "cd" * 16, [span("01", "", "root", 0, 1000), span("02", "01", "tiny", 500, 500.01)]
    )
    text = waterfall.render_waterfall(trace, width=20, ascii_only=True)
    tiny = rows(text)[1]
    assert "`-tiny" not in tiny and "`- tiny" in tiny
    assert tiny[tiny.index("|") + 1 : tiny.rindex("|")] == " " * 10 + "#" + " " * 9
    assert "1.00s" in text.splitlines()[0] and "10us" in tiny
    assert all(ord(c) < 128 for c in text)


def test_orphans_are_roots_and_empty_traces_do_not_crash() -> None:
    trace = Trace("ef" * 16, [span("02", "99", "orphan", 1, 2), span("01", "", "root", 0, 3)])
    assert [s.name for s, prefix in waterfall.tree(trace.spans) if prefix == ""] == [
        "root",
        "orphan",
    ]
    assert waterfall.render_waterfall(Trace("00" * 16, [])) == f"trace {'00' * 16}: no spans\n"


def test_node_falls_back_to_pod_name_and_skips_unexpanded_references() -> None:
    s = span("01", "", "x", 0, 1)
    s.resource = {"kvstore.member.id": "$(POD_NAME)", "k8s.pod.name": "kv-3"}
    assert waterfall.node_of(s) == "kv-3"
    s.resource = {}
    assert waterfall.node_of(s) == ""


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (850_000, "850us"),
        (12_400_000, "12.4ms"),
        (250 * MS, "250ms"),
        (1_250 * MS, "1.25s"),
        (123 * 1000 * MS, "2m03s"),
    ],
)
def test_format_duration(ns: int, text: str) -> None:
    assert waterfall.format_duration(ns) == text


def test_select_traces_filters_errors_and_slowness_newest_first() -> None:
    def trace(tid: str, start: float, length: float, error: bool = False) -> Any:
        return Trace(
            tid, [span("01", "", "op", start, start + length, status="ERROR" if error else "UNSET")]
        )

    traces = [
        trace("a", 0, 5),
        trace("b", 10, 600, error=True),
        trace("c", 20, 700),
        trace("d", 30, 1),
    ]
    assert [t.trace_id for t in waterfall.select_traces(traces)] == ["d", "c", "b", "a"]
    assert [t.trace_id for t in waterfall.select_traces(traces, errors=True)] == ["b"]
    assert [t.trace_id for t in waterfall.select_traces(traces, slower_than_ns=500 * MS)] == [
        "c",
        "b",
    ]
    assert [t.trace_id for t in waterfall.select_traces(traces, limit=1)] == ["d"]


def test_bad_input_names_the_parameter() -> None:
    with pytest.raises(InspectError, match="ID: expected a trace id"):
        jaeger.normalize_trace_id("xyz")
    assert jaeger.normalize_trace_id("ABC") == "0" * 29 + "abc"
    with pytest.raises(InspectError, match="--slower-than: expected a duration"):
        jaeger.parse_duration_ns("fast", "--slower-than")
    assert jaeger.parse_duration_ns("1m30s", "--lookback") == 90 * 10**9
