"""`kvtrace trace` and `kvtrace traces` against the real collector and Jaeger v2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kvtrace import canary as otlp

pytestmark = pytest.mark.dataplane

KVTRACE = str(Path(sys.executable).parent / "kvtrace")
MS = 1_000_000


def send(collector: Any, service: str, spans: list[dict[str, Any]]) -> None:
    request = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        otlp._attr("service.name", service),
                        otlp._attr("kvstore.member.id", "kv-0"),
                    ]
                },
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }
    code, body = otlp.post(collector.otlp_http, request)
    assert code == 200, body


def span(
    trace_id: str, span_id: str, parent: str, name: str, start: int, end: int, error: bool = False
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 2,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "status": {"code": 2, "message": "replica down"} if error else {"code": 0},
    }


def kvtrace(*args: str, jaeger: Any = None) -> subprocess.CompletedProcess[str]:
    extra = ["--jaeger", jaeger.query_url] if jaeger is not None else []
    return subprocess.run([KVTRACE, *args, *extra], capture_output=True, text=True, timeout=60)


def test_trace_and_traces_draw_waterfalls_and_filter(
    jaeger: Any, collector: Any, poll: Any
) -> None:
    backend = jaeger()
    coll = collector(jaeger=backend)
    now = time.time_ns()
    fast, slow = otlp.new_ids()[0], otlp.new_ids()[0]
    send(
        coll,
        "inspect-demo",
        [
            span(fast, "a1" * 8, "", "GET /v1/kv/{key}", now - 50 * MS, now - 45 * MS),
            span(fast, "a2" * 8, "a1" * 8, "read kv-1", now - 49 * MS, now - 46 * MS),
            span(
                slow, "b1" * 8, "", "PUT /v1/kv/{key}", now - 900 * MS, now - 100 * MS, error=True
            ),
            span(
                slow,
                "b2" * 8,
                "b1" * 8,
                "replicate kv-2",
                now - 890 * MS,
                now - 110 * MS,
                error=True,
            ),
        ],
    )
    client = backend.client()
    poll(
        lambda: client.trace(fast) and client.trace(slow),
        timeout=30,
        message="both traces in Jaeger",
    )

    drawn = kvtrace("trace", slow, jaeger=backend)
    assert drawn.returncode == 0, drawn.stderr
    lines = drawn.stdout.splitlines()
    assert (
        lines[0].startswith(f"trace {slow}  inspect-demo: PUT /v1/kv/{{key}}")
        and "2 errors" in lines[0]
    )
    assert (
        "└─ replicate kv-2" in drawn.stdout and "kv-0" in drawn.stdout and "ERROR" in drawn.stdout
    )
    assert "! replicate kv-2 (kv-0): replica down" in drawn.stdout

    both = kvtrace("traces", "--service", "inspect-demo", "--summary", jaeger=backend)
    assert both.returncode == 0, both.stderr
    assert [line.split()[1] for line in both.stdout.splitlines()] == [fast, slow]  # newest first
    errors = kvtrace("traces", "--service", "inspect-demo", "--errors", jaeger=backend)
    assert errors.returncode == 0 and slow in errors.stdout and fast not in errors.stdout
    slower = kvtrace(
        "traces", "--service", "inspect-demo", "--slower-than", "500ms", "--ascii", jaeger=backend
    )
    assert slower.returncode == 0, slower.stderr
    assert (
        slow in slower.stdout and fast not in slower.stdout and "`- replicate kv-2" in slower.stdout
    )
    limited = kvtrace(
        "traces", "--service", "inspect-demo", "--limit", "1", "--summary", jaeger=backend
    )
    assert limited.stdout.count("trace ") == 1

    # Bad input and missing things: one line naming the parameter, exit 2, no traceback.
    for args, expected in [
        (("trace", "0" * 31 + "1"), "ID: Jaeger at"),
        (("trace", "not-hex"), "ID: expected a trace id"),
        (("traces", "--service", "nobody"), "--service: Jaeger at"),
        (
            ("traces", "--service", "inspect-demo", "--slower-than", "soon"),
            "--slower-than: expected a duration",
        ),
    ]:
        result = kvtrace(*args, jaeger=backend)
        assert (
            result.returncode == 2
            and expected in result.stderr
            and "Traceback" not in result.stderr
        ), result
    unreachable = kvtrace("trace", slow, "--jaeger", "http://127.0.0.1:9")
    assert (
        unreachable.returncode == 3
        and "cannot reach Jaeger at http://127.0.0.1:9 (--jaeger)" in unreachable.stderr
    )
    assert "Traceback" not in unreachable.stderr
