"""OTLP/HTTP (JSON encoding) for the doctor's probes: an empty export request (does the
collector accept OTLP?) and a canary trace (does a trace reach Jaeger?).

The canary lasts longer than the pipeline's ``latencyThreshold``, so production tail sampling
keeps it through the ``slow`` policy whatever the ratio; it carries no ERROR status, so it
never shows up among real errors.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

CANARY_SERVICE = "kvtrace-doctor"
CANARY_SPAN = "kvtrace doctor canary"


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def canary_request(trace_id: str, span_id: str, *, start_ns: int, end_ns: int,
                   attributes: dict[str, str]) -> dict[str, Any]:
    """An ExportTraceServiceRequest (OTLP-JSON) with one root span."""
    return {"resourceSpans": [{
        "resource": {"attributes": [_attr("service.name", CANARY_SERVICE)]},
        "scopeSpans": [{
            "scope": {"name": "kvtrace.inspect.doctor"},
            "spans": [{
                "traceId": trace_id, "spanId": span_id, "name": CANARY_SPAN, "kind": 1,
                "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(end_ns),
                "attributes": [_attr(k, v) for k, v in sorted(attributes.items())],
                "status": {"code": 0},
            }],
        }],
    }]}


def traces_url(base: str) -> str:
    """``http://host:4318`` → ``http://host:4318/v1/traces`` (a full path is kept)."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def post(url: str, request: dict[str, Any], timeout: float = 5.0) -> tuple[int, str]:
    """POST an OTLP-JSON request; (HTTP status, body). Raises OSError when unreachable."""
    body = json.dumps(request).encode()
    req = urllib.request.Request(traces_url(url), data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the user's collector
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
