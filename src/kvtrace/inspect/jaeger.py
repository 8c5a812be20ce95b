"""Jaeger ``/api/v3`` queries for the inspection commands (the I/O edge).

The query client itself is :class:`kvtrace.shared.jaeger_client.JaegerClient` (stdlib
only); this module validates the user's input and turns every failure into an
:class:`InspectError` naming the parameter or Jaeger's address.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.error
from collections.abc import Callable
from typing import Any, TypeVar

from kvtrace.inspect.errors import InspectError, Unreachable
from kvtrace.inspect.waterfall import select_traces
from kvtrace.shared.jaeger_client import JaegerClient, JaegerError, Trace

T = TypeVar("T")
TRACE_ID = re.compile(r"^[0-9a-fA-F]{1,32}$")
# --errors and --slower-than filter after the query, so ask Jaeger for more than --limit.
OVERFETCH = 10
MAX_FETCH = 500


def parse_duration_ns(value: str, parameter: str) -> int:
    """A Go-style duration (``250ms``, ``1h30m``) in nanoseconds; InspectError naming
    ``parameter`` otherwise."""
    from kvtrace_operator.render.errors import SpecError
    from kvtrace_operator.spec.durations import parse_duration

    try:
        return int(parse_duration(value, parameter))
    except SpecError as exc:
        raise InspectError(str(exc)) from None


def normalize_trace_id(value: str) -> str:
    if not TRACE_ID.match(value.strip()):
        raise InspectError(f"ID: expected a trace id of 1 to 32 hex digits, got {value!r}")
    return value.strip().lower().rjust(32, "0")


def call(url: str, what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except JaegerError as exc:
        raise InspectError(f"Jaeger at {url} (--jaeger) refused to {what}: {exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach Jaeger at {url} (--jaeger) to {what}: {reason}") from None
    except ValueError as exc:  # JSON
        raise InspectError(
            f"Jaeger at {url} (--jaeger) answered something that is not /api/v3 JSON "
            f"when asked to {what}: {exc}"
        ) from None


def fetch_trace(url: str, trace_id: str, *, timeout: float = 10.0) -> Trace:
    trace_id = normalize_trace_id(trace_id)
    client = JaegerClient(url, timeout=timeout)
    trace = call(url, f"get trace {trace_id}", lambda: client.trace(trace_id))
    if trace is None:
        raise InspectError(
            f"ID: Jaeger at {url} has no trace {trace_id} (sampled out, not yet "
            "flushed, or older than its retention)"
        )
    return trace


def find(
    url: str,
    service: str,
    *,
    operation: str | None = None,
    errors: bool = False,
    slower_than: str | None = None,
    lookback: str = "1h",
    limit: int = 5,
    now: dt.datetime | None = None,
    timeout: float = 10.0,
) -> list[Trace]:
    """Recent traces of ``service`` matching the filters, most recent first."""
    if not service:
        raise InspectError("--service: give the service name (OTEL_SERVICE_NAME of the members)")
    min_ns = parse_duration_ns(slower_than, "--slower-than") if slower_than else None
    window = dt.timedelta(microseconds=parse_duration_ns(lookback, "--lookback") / 1000)
    client = JaegerClient(url, timeout=timeout)
    services = call(url, "list services", client.services)
    if service not in services:
        known = ", ".join(services[:20]) or "none yet"
        raise InspectError(
            f"--service: Jaeger at {url} knows no service {service!r} (known: {known})"
        )
    wanted = limit if not (errors or min_ns) else min(MAX_FETCH, limit * OVERFETCH)
    end = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(minutes=1)
    kwargs: dict[str, Any] = {
        "operation": operation,
        "start": end - window - dt.timedelta(minutes=1),
        "end": end,
        "limit": wanted,
    }
    if min_ns:
        kwargs["min_duration"] = f"{min_ns / 1e9:.9f}".rstrip("0").rstrip(".") + "s"
    traces = call(url, f"find traces of {service}", lambda: client.find_traces(service, **kwargs))
    return select_traces(traces, errors=errors, slower_than_ns=min_ns, limit=limit)
