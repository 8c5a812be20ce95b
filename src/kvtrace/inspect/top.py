"""``kvtrace top``: a RED table (rate, errors, duration percentiles) per KV operation and
consistency, per member, and the collector's accepted/refused/dropped spans, from the
pipeline's metrics store (Prometheus: the spanmetrics connector's series and the
collector's own telemetry).

The queries and the table are pure (:func:`queries`, :func:`assemble`, :func:`render_table`);
:func:`fetch` is the I/O edge (Prometheus' HTTP API, stdlib only). Never imports the operator
or kvtrace.devstack's process harness.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from kvtrace.inspect.errors import InspectError

CALLS = "traces_span_metrics_calls_total"
BUCKETS = "traces_span_metrics_duration_milliseconds_bucket"
CLIENT_OPS = 'span_kind="SPAN_KIND_SERVER", kvstore_operation=~"read|write|delete"'
ERROR = 'status_code="STATUS_CODE_ERROR"'
OPERATION = ("kvstore_operation", "kvstore_consistency")
MEMBER = ("kvstore_member_id",)
QUANTILES = (0.5, 0.95, 0.99)

Query = Callable[[str], list[dict[str, Any]]]


def _by(labels: tuple[str, ...]) -> str:
    return ", ".join(labels)


def red_queries(labels: tuple[str, ...], window: str) -> dict[str, str]:
    """PromQL of rate (ops/s), error rate and the percentiles (ms), grouped by ``labels``."""
    by = _by(labels)
    result = {
        "rate": f"sum by ({by}) (rate({CALLS}{{{CLIENT_OPS}}}[{window}]))",
        "errors": f"sum by ({by}) (rate({CALLS}{{{CLIENT_OPS}, {ERROR}}}[{window}]))",
    }
    for q in QUANTILES:
        result[f"p{round(q * 100)}"] = (
            f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({BUCKETS}{{{CLIENT_OPS}}}[{window}])))"
        )
    return result


def collector_queries(window: str) -> dict[str, str]:
    """Spans/s the collector accepted, refused (receivers) and dropped (exporters)."""
    return {
        "accepted": f"sum(rate(otelcol_receiver_accepted_spans_total[{window}]))",
        "refused": f"sum(rate(otelcol_receiver_refused_spans_total[{window}]))",
        "dropped": f"sum(rate(otelcol_exporter_send_failed_spans_total[{window}]))",
    }


def queries(window: str) -> dict[str, dict[str, str]]:
    return {
        "operations": red_queries(OPERATION, window),
        "members": red_queries(MEMBER, window),
        "collector": collector_queries(window),
    }


def _number(sample: Mapping[str, Any]) -> float | None:
    value = float(sample["value"][1])
    return None if math.isnan(value) or math.isinf(value) else value


def _rows(
    results: Mapping[str, list[dict[str, Any]]], labels: tuple[str, ...]
) -> list[dict[str, Any]]:
    """One row per label set: its rate, errors (a share of the rate) and percentiles."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for column, samples in results.items():
        for sample in samples:
            key = tuple(str(sample["metric"].get(label, "")) for label in labels)
            row = rows.setdefault(key, dict(zip(labels, key, strict=True)))
            row[column] = _number(sample)
    out = []
    for key in sorted(rows):
        row = rows[key]
        rate = row.get("rate") or 0.0
        errors = row.pop("errors", None) or 0.0
        row["rate"] = rate
        row["error_ratio"] = errors / rate if rate else 0.0
        for q in QUANTILES:
            row.setdefault(f"p{round(q * 100)}", None)
        out.append(row)
    return out


def assemble(results: Mapping[str, Mapping[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The report from query results (same shape as :func:`queries`)."""
    collector = {
        name: (_number(samples[0]) if samples else 0.0) or 0.0
        for name, samples in results["collector"].items()
    }
    return {
        "operations": _rows(results["operations"], OPERATION),
        "members": _rows(results["members"], MEMBER),
        "collector": collector,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return lines


def _red(row: Mapping[str, Any]) -> list[str]:
    return [
        f"{row['rate']:.2f}",
        f"{100 * row['error_ratio']:.1f}%",
        _ms(row["p50"]),
        _ms(row["p95"]),
        _ms(row["p99"]),
    ]


def render_table(report: Mapping[str, Any], window: str) -> str:
    red = ["OPS/S", "ERRORS", "P50 MS", "P95 MS", "P99 MS"]
    lines = [f"KV operations (spanmetrics, every span before sampling; rates over {window})"]
    lines += _table(
        ["OPERATION", "CONSISTENCY", *red],
        [
            [r["kvstore_operation"], r["kvstore_consistency"] or "-", *_red(r)]
            for r in report["operations"]
        ],
    )
    if not report["operations"]:
        lines.append("(no KV operations in the window)")
    lines += ["", "Members"]
    lines += _table(
        ["MEMBER", *red], [[r["kvstore_member_id"] or "-", *_red(r)] for r in report["members"]]
    )
    c = report["collector"]
    lines += [
        "",
        f"Collector spans/s: accepted {c['accepted']:.1f}  refused {c['refused']:.1f}  "
        f"dropped {c['dropped']:.1f}",
    ]
    return "\n".join(lines) + "\n"


def prometheus_query(url: str, timeout: float = 10.0) -> Query:
    """A Query of the Prometheus at ``url`` (its HTTP API, no proxy: local or port-forwarded)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def run(expr: str) -> list[dict[str, Any]]:
        target = f"{url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with opener.open(target, timeout=timeout) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise InspectError(
                f"--prometheus {url}: the query API did not answer ({exc})"
            ) from None
        if body.get("status") != "success":
            raise InspectError(f"--prometheus {url}: {body.get('error') or body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    return run


def fetch(query: Query, window: str) -> dict[str, Any]:
    """Run every query and assemble the report."""
    return assemble(
        {
            section: {name: query(expr) for name, expr in exprs.items()}
            for section, exprs in queries(window).items()
        }
    )
