"""The real collector and Jaeger v2 as local processes."""

from __future__ import annotations

from typing import Any

import pytest

from kvtrace.devstack.backends import Jaeger, send_probe_trace, validate_config
from kvtrace.devstack.proc import processes_mentioning
from kvtrace.devstack.pytest_plugin import require_binaries

pytestmark = pytest.mark.dataplane


def test_otlp_span_through_the_collector_is_found_in_jaeger(
    jaeger: Any, collector: Any, poll: Any
) -> None:
    backend = jaeger()
    pipeline = collector(jaeger=backend)
    trace_id = send_probe_trace(pipeline.otlp_http, "devstack-smoke")
    client = backend.client()

    (trace,) = poll(
        lambda: client.find_traces("devstack-smoke"), timeout=30, message="trace in Jaeger"
    )
    assert trace.trace_id == trace_id
    root = trace.root()
    assert root is not None and (root.name, root.kind) == ("PUT", "SERVER")
    assert root.attributes["kvstore.operation"] == "write"
    (child,) = trace.children(root)
    assert (child.name, child.kind, child.status_code) == ("replicate", "CLIENT", "ERROR")
    assert "devstack-smoke" in client.services()
    fetched = client.trace(trace_id)
    assert fetched is not None and {s.span_id for s in fetched.spans} == {
        s.span_id for s in trace.spans
    }
    assert client.trace("0" * 31 + "1") is None


def test_collector_validate_rejects_a_broken_config() -> None:
    require_binaries("otelcol-kvtrace")
    good = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318"}}}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
    }
    assert validate_config(good).returncode == 0
    broken = {
        **good,
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["nope"]}}},
    }
    result = validate_config(broken)
    assert result.returncode != 0 and "nope" in result.stderr


def test_backends_leave_no_process_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVTRACE_KEEP_WORKDIRS", raising=False)
    require_binaries("jaeger")
    backend = Jaeger().start()
    workdir = backend.workdir
    assert processes_mentioning(str(workdir))
    backend.stop()
    assert processes_mentioning(str(workdir)) == []
    assert not workdir.exists()
