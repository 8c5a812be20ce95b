"""The Jaeger UI in a real browser (headless Debian Chromium via selenium), served by the local
Jaeger from the jaeger-ui built into the tool cache, after load through the rendered stack:

- the trace view shows a KV write with the coordinator's and the replicas' spans;
- the Monitor tab (SPM, reading the pipeline's Prometheus) lists the KV service's operations
  with non-zero rates, and an error rate after failed writes;
- the System Architecture view shows the edge from a traced client service to the KV service.

Screenshots are saved as artifacts (``$KVTRACE_TEST_ARTIFACTS``, default ``test-artifacts/``).
Plain HTTP here (security off): the subject is the UI, not TLS. About 60-90 s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from tracing_stack import CLIENT_SERVICE, PUT_OP, Stack, flush, traced_client_writes

from kvtrace.devstack import tools
from kvtrace.devstack.browser import headless_chromium, page_text, screenshot
from kvtrace.devstack.pytest_plugin import poll, require_binaries

pytestmark = pytest.mark.dataplane

SPEC = {"sampling": {"mode": "production", "ratio": 1.0, "decisionWait": "2s"},
        "metrics": {"prometheus": {"scrapeInterval": "2s"}},
        "security": {"auth": {"enabled": False}, "tls": {"enabled": False}}}


def test_trace_view_monitor_tab_and_system_architecture(trace_stack: Callable[..., Stack], tmp_path: Path) -> None:
    require_binaries("index.html")  # jaeger-ui in the tool cache (kvtrace dev tools)
    stack = trace_stack(SPEC, faults="error:fail/", prometheus=True)
    jaeger = stack.jaeger.backend
    assert jaeger.config["extensions"]["jaeger_query"]["ui"] == {"assets_path": str(tools.jaeger_ui_assets())}
    ops = traced_client_writes(stack, [f"norm/ui-{i}" for i in range(20)] + [f"fail/ui-{i}" for i in range(5)])
    assert [op.status for op in ops] == [204] * 20 + [500] * 5
    flush(stack, "fail/marker-")
    ok = ops[0]
    poll(lambda: (t := stack.jaeger.client.trace(ok.trace_id)) is not None and len(t.spans) >= 4,
         timeout=60, message="the client's trace with the coordinator's and replicas' spans")
    # The Monitor tab reads Prometheus: wait until Jaeger's metrics API has the error rate.
    poll(lambda: stack.jaeger.client.service_metrics("errors", "orders"), timeout=90, interval=2,
         message="SPM error rate of orders")

    base = jaeger.query_url
    with headless_chromium(tmp_path / "chromium-profile") as browser:
        # 1. The trace view: the client span, the coordinator's PUT and the replicas' spans.
        text = page_text(browser, f"{base}/trace/{ok.trace_id}",
                         lambda t: PUT_OP in t and "kvstore.replicate" in t and CLIENT_SERVICE in t)
        screenshot(browser, "jaeger-ui-trace-view")
        assert "orders" in text
        # 2. The Monitor tab: the KV service's operations with rates and errors.
        text = page_text(browser, f"{base}/monitor?service=orders",
                         lambda t: PUT_OP in t and re.search(r"[1-9][0-9.]*\s*req/s", t) is not None
                         and re.search(r"[1-9][0-9.]*\s*%", t) is not None, timeout=120)
        screenshot(browser, "jaeger-ui-monitor-tab")
        # 3. System Architecture: the edge shop-frontend -> orders.
        text = page_text(browser, f"{base}/dependencies",
                         lambda t: CLIENT_SERVICE in t and "orders" in t, timeout=60)
        screenshot(browser, "jaeger-ui-system-architecture")
    assert (CLIENT_SERVICE, "orders") in {(p, c) for p, c, _ in stack.jaeger.client.dependencies()}
