"""Traces drawn as a waterfall in the terminal (``kvtrace trace ID``, ``kvtrace traces``).

Pure functions of decoded spans (:class:`kvtrace.shared.jaeger_client.Span`, or anything
with the same fields): the span tree in start order, each span's bar placed and sized to scale
on the trace's time axis, with its service, node (pod / member) and status.

    trace 4bf92f35... kv: PUT /v1/kv/{key}, 3 spans, 12.4ms, 1 error
    SPAN                      SERVICE  NODE  DURATION  STATUS  |0ms                  12.4ms|
    PUT /v1/kv/{key}          kv       kv-0    12.4ms  ERROR   |########################|
    ├─ replicate kv-1         kv       kv-0     4.1ms          |  ######                |
    │  └─ PUT /internal/...   kv       kv-1     3.0ms  ERROR   |   ####                 |
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

NODE_ATTRIBUTES = ("kvstore.member.id", "k8s.pod.name", "service.instance.id", "host.name")
NAME_WIDTH = 44
BAR_WIDTH = 40


def node_of(span: Any) -> str:
    """The member or pod a span ran on (resource attributes, then span attributes)."""
    for source in (span.resource or {}, span.attributes or {}):
        for key in NODE_ATTRIBUTES:
            value = source.get(key)
            if value and "$(" not in str(value):
                return str(value)
    return ""


def format_duration(ns: int) -> str:
    """Nanoseconds as 850us, 12.4ms, 1.25s, 2m03s."""
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}us"
    if ns < 1_000_000_000:
        ms = ns / 1e6
        return f"{ms:.1f}ms" if ms < 100 else f"{ms:.0f}ms"
    seconds = ns / 1e9
    if seconds < 60:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def tree(spans: Sequence[Any]) -> list[tuple[Any, str]]:
    """Spans depth-first in start order, each with its tree prefix (``├─ ``, ``│  └─ ``).
    A span whose parent is not in the trace is drawn as a root."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Any]] = {}
    roots = []
    for span in sorted(spans, key=lambda s: (s.start_ns, s.end_ns)):
        if (
            span.parent_span_id
            and span.parent_span_id in ids
            and span.parent_span_id != span.span_id
        ):
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    result: list[tuple[Any, str]] = []
    seen: set[str] = set()

    def walk(span: Any, lead: str, branch: str) -> None:
        if span.span_id in seen:  # a cycle in malformed data
            return
        seen.add(span.span_id)
        result.append((span, lead + branch))
        kids = children.get(span.span_id, [])
        below = lead + ("" if not branch else ("   " if branch == "└─ " else "│  "))
        for index, kid in enumerate(kids):
            walk(kid, below, "└─ " if index == len(kids) - 1 else "├─ ")

    for root in roots:
        walk(root, "", "")
    return result


def bar(start_ns: int, end_ns: int, t0: int, total: int, width: int, fill: str) -> str:
    """A bar of ``width`` cells with ``fill`` where [start, end] falls on [t0, t0 + total]."""
    if total <= 0:
        return fill * width
    left = int((start_ns - t0) * width / total)
    right = int(round((end_ns - t0) * width / total))
    left = min(max(left, 0), width - 1)
    right = min(max(right, left + 1), width)  # at least one cell, however short the span
    return " " * left + fill * (right - left) + " " * (width - right)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def status_text(span: Any) -> str:
    return {"ERROR": "ERROR", "OK": "OK"}.get(span.status_code, "")


def summary(trace: Any) -> str:
    """One line: id, root service and operation, span count, duration, errors."""
    spans = list(trace.spans)
    if not spans:
        return f"trace {trace.trace_id}: no spans"
    roots = [s for s in spans if not s.parent_span_id] or spans
    root = min(roots, key=lambda s: s.start_ns)
    t0, t1 = min(s.start_ns for s in spans), max(s.end_ns for s in spans)
    errors = sum(1 for s in spans if s.status_code == "ERROR")
    start = dt.datetime.fromtimestamp(t0 / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    services = sorted({s.service for s in spans if s.service})
    text = (
        f"trace {trace.trace_id}  {root.service}: {root.name}  {start}Z  {format_duration(t1 - t0)}, "
        f"{len(spans)} span{'s' if len(spans) != 1 else ''}"
    )
    if len(services) > 1:
        text += f", services {', '.join(services)}"
    if errors:
        text += f", {errors} error{'s' if errors != 1 else ''}"
    return text


def render_waterfall(
    trace: Any, *, width: int = BAR_WIDTH, name_width: int = NAME_WIDTH, ascii_only: bool = False
) -> str:
    """The trace as a waterfall: header line, then one row per span of the tree."""
    spans = list(trace.spans)
    if not spans:
        return summary(trace) + "\n"
    t0, t1 = min(s.start_ns for s in spans), max(s.end_ns for s in spans)
    total = t1 - t0
    ok_fill, error_fill = ("#", "!") if ascii_only else ("█", "▓")
    rows = []
    for span, prefix in tree(spans):
        if ascii_only:
            prefix = prefix.replace("├─", "|-").replace("└─", "`-").replace("│", "|")
        fill = error_fill if span.status_code == "ERROR" else ok_fill
        rows.append(
            (
                _cut(prefix + span.name, name_width),
                span.service or "-",
                node_of(span) or "-",
                format_duration(span.end_ns - span.start_ns),
                status_text(span),
                "|" + bar(span.start_ns, span.end_ns, t0, total, width, fill) + "|",
            )
        )
    axis_end = format_duration(total)
    axis = "|0" + axis_end.rjust(width - 1) + "|"
    header = ("SPAN", "SERVICE", "NODE", "DURATION", "STATUS", axis)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = [summary(trace)]
    for row in [header, *rows]:
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].ljust(widths[2]),
            row[3].rjust(widths[3]),
            row[4].ljust(widths[4]),
            row[5],
        ]
        lines.append("  ".join(cells))
    for span in spans:
        if span.status_code == "ERROR" and span.status_message:
            lines.append(
                f"  ! {span.name} ({node_of(span) or span.service}): {span.status_message}"
            )
    return "\n".join(lines) + "\n"


def has_error(trace: Any) -> bool:
    return any(s.status_code == "ERROR" for s in trace.spans)


def duration_ns(trace: Any) -> int:
    spans = list(trace.spans)
    return max(s.end_ns for s in spans) - min(s.start_ns for s in spans) if spans else 0


def select_traces(
    traces: Iterable[Any],
    *,
    errors: bool = False,
    slower_than_ns: int | None = None,
    limit: int | None = None,
) -> list[Any]:
    """The traces that match, most recent first, at most ``limit``."""
    chosen = [
        t
        for t in traces
        if t.spans
        and (not errors or has_error(t))
        and (slower_than_ns is None or duration_ns(t) >= slower_than_ns)
    ]
    chosen.sort(key=lambda t: min(s.start_ns for s in t.spans), reverse=True)
    return chosen[:limit] if limit is not None else chosen
