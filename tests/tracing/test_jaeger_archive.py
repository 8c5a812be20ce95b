"""spec.jaeger.archive with badger on the real Jaeger (the rendered config): the archive is a
second badger database with its own, longer retention. A trace archived through the query API
(what the UI's Archive Trace button calls) outlives the primary store's retention and a Jaeger
restart; a trace not archived expires with the primary store. (The memory archive and the
button itself: tests/ui/test_jaeger_ui_browser.py.)"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from tracing_stack import SPANS_PER_WRITE, Stack, traced_put, wait_for_traces

from kvtrace.devstack.proc import urlopen_direct
from kvtrace.devstack.pytest_plugin import poll
from kvtrace.shared.jaeger_client import Trace

pytestmark = pytest.mark.dataplane

PRIMARY_RETENTION = "1m"  # the CRD's minimum: the test waits it out once


def archive(stack: Stack, trace_id: str) -> None:
    """``POST /api/archive/TRACE_ID`` over the query port's TLS (the Archive Trace button)."""
    jaeger = stack.jaeger.backend
    request = urllib.request.Request(f"{jaeger.query_url}/api/archive/{trace_id}", method="POST")
    with urlopen_direct(request, timeout=10, context=jaeger.ssl_context()) as resp:
        assert resp.status == 200, resp.status


def whole(_: str, trace: Trace) -> bool:
    return len(trace.spans) == SPANS_PER_WRITE


def test_badger_archive_outlives_the_primary_retention_and_a_restart(
    trace_stack: Callable[..., Stack],
) -> None:
    stack = trace_stack(
        {
            "sampling": {"mode": "production", "ratio": 1.0, "decisionWait": "2s"},
            "jaeger": {
                "storage": {"type": "badger", "retention": PRIMARY_RETENTION},
                "archive": {"enabled": True, "retention": "30m"},
            },
        }
    )
    client = stack.jaeger.client
    kept, dropped = traced_put(stack, "archive/kept"), traced_put(stack, "archive/dropped")
    written = wait_for_traces(client, [kept, dropped], 60, whole)
    archive(stack, kept)

    # The primary store's spans expire after 1m; the archive's copy stays (30m).
    poll(
        lambda: client.trace(dropped) is None,
        timeout=150,
        interval=2,
        message=f"the trace not archived expired after {PRIMARY_RETENTION}",
    )
    from_archive = client.trace(kept)
    assert from_archive is not None, "the archived trace expired with the primary store"
    assert sorted(s.span_id for s in from_archive.spans) == sorted(
        s.span_id for s in written[kept].spans
    )

    stack.jaeger.kill(graceful=True)  # as the kubelet stops the pod; badger is on its volume
    stack.jaeger.restart()
    after = client.trace(kept)
    assert after is not None and len(after.spans) == SPANS_PER_WRITE, "lost on restart"
    assert client.trace(dropped) is None
