"""The Jaeger UI in a real browser (headless Chromium, selenium) after load through the rendered
stack: KV nodes, the collector with the spanmetrics and servicegraph connectors, Prometheus and
Jaeger serving the built jaeger-ui over TLS (kvtrace.devstack.browser pins its certificate).

- Chromium accepts the pinned certificate and no other;
- the trace view shows a client's trace with the coordinator's and both replicas' spans, each
  member named as the Jaeger API has it;
- the Monitor tab (SPM) shows the KV service's operations with non-zero request rates and an
  error rate after failed writes;
- System Architecture draws the client -> KV edge the Jaeger API reports;
- with ``spec.jaeger.archive``, the Archive Trace button stores a trace that the small primary
  store then evicts, and the UI still shows it (a trace not archived is gone).

Each view is waited for with a deadline and fails when it stays empty; screenshots of every
view go to the artifacts directory (kvtrace.devstack.browser, ``$KVTRACE_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tracing_stack import (
    CLIENT_SERVICE,
    CLUSTER,
    PUT_OP,
    SPANS_PER_WRITE,
    Op,
    Stack,
    run_ops,
    traced_client_writes,
    traced_put,
    traces_of,
    wait_for_traces,
    workload,
)

from kvtrace.devstack import browser
from kvtrace.devstack.pytest_plugin import poll, require_binaries
from kvtrace.shared.jaeger_client import Trace
from kvtrace_operator import pki

pytestmark = pytest.mark.dataplane

FAULTS = "error:fail/"
REPLICATE_OP = "kvstore.replicate"
# Every trace kept (ratio 1), decided 2 s after its last span: the views see all the load.
SAMPLING = {"mode": "production", "ratio": 1.0, "decisionWait": "2s"}
CLIENT_WRITES, WRITES, FAILED_WRITES = 4, 20, 5
MEMBER = "kvstore.member.id"


@contextlib.contextmanager
def chromium(stack: Stack, tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium trusting exactly the local Jaeger's serving certificate (the leaf of
    the rendered TLS block, on local files)."""
    query = stack.jaeger.backend.config["extensions"]["jaeger_query"]["http"]
    leaf = Path(query["tls"]["cert_file"]).read_text()
    with browser.headless_chromium(tmp_path / "chromium-profile", trust=[leaf]) as driver:
        yield driver


def ui_url(stack: Stack, path: str) -> str:
    url = stack.jaeger.backend.query_url
    assert url.startswith("https://"), f"the UI is served over TLS by default, got {url}"
    return url + path


def whole(spans: int) -> Callable[[str, Trace], bool]:
    return lambda _, trace: len(trace.spans) == spans


def trace_page(driver: Any, stack: Stack, trace: Trace, timeout: float = 60) -> str:
    """The trace's page, once its header counts every span of ``trace``."""
    spans = len(trace.spans)
    return browser.page_text(
        driver,
        ui_url(stack, f"/trace/{trace.trace_id}"),
        lambda text: re.search(rf"Total Spans:?\s*{spans}(?!\d)", text) is not None,
        timeout,
    )


# --------------------------------------------------------------------------- TLS trust


@contextlib.contextmanager
def https_server(directory: Path) -> Iterator[tuple[str, str]]:
    """A loopback HTTPS server of a fresh CA's leaf for 127.0.0.1: (URL, the leaf's PEM)."""
    now = dt.datetime.now(dt.UTC)
    ca = pki.make_ca("browser-test-ca", now, dt.timedelta(hours=1))
    leaf = pki.issue(ca, "jaeger", ["jaeger"], now, dt.timedelta(hours=1), ("127.0.0.1",))
    (directory / "tls.crt").write_text(leaf.cert_pem)
    (directory / "tls.key").write_text(leaf.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>served over TLS</body></html>")

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", leaf.cert_pem
    finally:
        server.shutdown()
        server.server_close()


def test_chromium_trusts_the_pinned_certificate_and_no_other(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with https_server(tmp_path) as (url, leaf):
        other = pki.make_ca("another-key", dt.datetime.now(dt.UTC), dt.timedelta(hours=1))
        for trust, served in (([leaf], True), ([other.cert_pem], False), ([], False)):
            with browser.headless_chromium(tmp_path / f"profile-{len(trust)}-{served}", trust) as d:
                d.get(url)
                text = str(d.find_element(By.TAG_NAME, "body").text)
                assert ("served over TLS" in text) is served, (trust, text[:200])


# --------------------------------------------------------------------------- trace, SPM, DAG


def load(stack: Stack) -> Trace:
    """Client writes under a ``shop-frontend`` CLIENT span (the edge), plain writes and failed
    writes (the fault switch: HTTP 500, ERROR spans); returns a client trace as the Jaeger API
    has it (client span, coordinator, one replica span per peer)."""
    ops = traced_client_writes(stack, [f"ui/{i}" for i in range(CLIENT_WRITES)])
    assert all(op.status == 204 for op in ops), [(op.status, op.error) for op in ops]
    workload(stack, normal=WRITES, errors=FAILED_WRITES, slow=0, seed=13)
    tid = ops[0].trace_id
    return wait_for_traces(stack.jaeger.client, [tid], 60, whole(1 + SPANS_PER_WRITE))[tid]


def check_trace_view(driver: Any, stack: Stack, trace: Trace) -> None:
    from selenium.webdriver.common.by import By

    text = trace_page(driver, stack, trace)
    assert re.search(r"Services:?\s*2(?!\d)", text), text[:600]
    assert re.search(r"Depth:?\s*3(?!\d)", text), text[:600]  # client > coordinator > replicas
    for span in trace.spans:
        assert span.name in text and span.service in text, (span.name, text[:1500])
    for name in driver.find_elements(By.CSS_SELECTOR, ".span-name"):
        name.click()  # open every span's details: its Process (the resource) names the member
    expected = {str(s.resource[MEMBER]) for s in trace.spans if s.service == CLUSTER}
    assert len(expected) == SPANS_PER_WRITE, expected  # the coordinator and two replicas

    def shown(driver: Any) -> set[str] | None:
        items = browser.texts(driver, ".AccordianKeyValues--summaryItem")
        found = {i.split("=", 1)[1] for i in items if i.startswith(f"{MEMBER}=")}
        return found if found >= expected else None

    assert browser.wait_for(driver, shown, f"{MEMBER} of every KV span", 30) == expected
    browser.screenshot(driver, "jaeger-ui-trace")


def operation_row(text: str, operation: str) -> tuple[float, float | None] | None:
    """(requests/s, error %) of ``operation``'s row in the Monitor tab's table once it shows a
    request rate; the error rate is None where the table says "No Data" (no errors)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == operation:
            row = " ".join(lines[i + 1 : i + 4])  # latency, request rate, error rate
            rate, errors = re.search(r"([\d.]+) req/s", row), re.search(r"([\d.]+)%", row)
            if rate:
                return float(rate.group(1)), float(errors.group(1)) if errors else None
    return None


@contextlib.contextmanager
def steady_writes(stack: Stack, limit: int = 400, pace: float = 0.25) -> Iterator[list[Op]]:
    """Writes at a steady pace while the block runs, one in five failing (the fault switch),
    at most ``limit`` of them: the span metrics' counters must grow between two flushes of the
    connectors, since a rate is an increase between samples (what came before the first
    sample of a series counts for nothing)."""
    stop, done = threading.Event(), []

    def write() -> None:
        for i in range(limit):
            key = f"fail/steady-{i}" if i % 5 == 0 else f"norm/steady-{i}"
            op = Op(stack.nodes[i % len(stack.nodes)].url, "PUT", key, b"v")
            done.extend(run_ops([op], concurrency=1, timeout=30))
            if stop.wait(pace):  # the pace of the load, and how the block ends it
                return

    thread = threading.Thread(target=write, name="steady-writes", daemon=True)
    thread.start()
    try:
        yield done
    finally:
        stop.set()
        thread.join(timeout=60)


def check_monitor_tab(driver: Any, stack: Stack) -> None:
    browser.set_local_storage(driver, ui_url(stack, "/search"), {"lastAtmSearchService": CLUSTER})
    rows: dict[str, tuple[float, float | None]] = {}

    def ready(text: str) -> bool:
        for op in (PUT_OP, REPLICATE_OP):
            if (row := operation_row(text, op)) is not None:
                rows[op] = row
        put, replicate = rows.get(PUT_OP), rows.get(REPLICATE_OP)
        return bool(
            put and put[0] > 0 and 5 <= (put[1] or 0) <= 40 and replicate and replicate[0] > 0
        )

    # The span metrics reach Prometheus every 15 s (the connectors' flush interval); a rate
    # needs two of them. The Monitor tab fetches on load: reload until the rows fill. Prometheus
    # adds a zero at each series' start, so the first rows show the rates of a window that is
    # mostly before the load (e.g. 0.1%): wait for the error rate the steady writes give.
    with steady_writes(stack) as ops:
        url = ui_url(stack, "/monitor")
        browser.page_text(driver, url, ready, timeout=150, reload_every=15)
    browser.screenshot(driver, "jaeger-ui-monitor")
    assert {op.status for op in ops} == {204, 500}, {op.status for op in ops}
    # One in five of the steady writes fails (and 5 of the 29 before them): about 20% of the
    # PUTs; the window's edges move it, so a wide band is asserted.
    assert 5 <= (rows[PUT_OP][1] or 0) <= 40, rows


def check_dependencies(driver: Any, stack: Stack) -> None:
    from selenium.webdriver.common.by import By

    edges = poll(
        lambda: stack.jaeger.client.dependencies(dt.timedelta(minutes=30)),
        timeout=30,
        message="dependencies in the Jaeger API",
    )
    assert (CLIENT_SERVICE, CLUSTER) in {(parent, child) for parent, child, _ in edges}, edges
    services = {name for parent, child, _ in edges for name in (parent, child)}

    def drawn(driver: Any) -> tuple[set[str], int] | None:
        labels = {t.strip() for t in browser.texts(driver, ".DAG--nodeLabel")}
        paths = driver.find_elements(By.CSS_SELECTOR, ".DAG svg path[marker-end]")
        return (labels, len(paths)) if labels >= services and paths else None

    driver.get(ui_url(stack, "/dependencies"))
    labels, paths = browser.wait_for(driver, drawn, "the dependency graph's nodes and edges")
    assert labels == services and paths == len(edges), (labels, paths, edges)
    browser.screenshot(driver, "jaeger-ui-system-architecture")


def test_trace_view_monitor_tab_and_system_architecture_show_the_load(
    trace_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    require_binaries("otelcol-kvtrace", "jaeger", "index.html", "prometheus")
    stack = trace_stack(
        {"sampling": SAMPLING, "metrics": {"enabled": True}}, faults=FAULTS, prometheus=True
    )
    trace = load(stack)
    with chromium(stack, tmp_path) as driver:
        check_trace_view(driver, stack, trace)
        check_monitor_tab(driver, stack)
        check_dependencies(driver, stack)


# --------------------------------------------------------------------------- archive

PRIMARY_TRACES = 10


def test_archive_button_keeps_a_trace_the_primary_store_evicts(
    trace_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    require_binaries("otelcol-kvtrace", "jaeger", "index.html")
    stack = trace_stack(
        {
            "sampling": SAMPLING,
            "jaeger": {
                "storage": {"maxTraces": PRIMARY_TRACES},
                "archive": {"enabled": True, "maxTraces": 100},
            },
        }
    )
    client = stack.jaeger.client
    kept, dropped = traced_put(stack, "archive/kept"), traced_put(stack, "archive/dropped")
    traces = wait_for_traces(client, [kept, dropped], 60, whole(SPANS_PER_WRITE))
    with chromium(stack, tmp_path) as driver:
        from selenium.webdriver.common.by import By

        trace_page(driver, stack, traces[kept])
        buttons = [
            b for b in driver.find_elements(By.TAG_NAME, "button") if "Archive Trace" in b.text
        ]
        assert len(buttons) == 1, "the trace page shows no Archive Trace button"
        buttons[0].click()
        browser.wait_for(
            driver,
            lambda d: "This trace has been archived." in browser.body_text(d),
            "the archive's confirmation",
            30,
        )
        browser.screenshot(driver, "jaeger-ui-archived")

        # New traces push both out of the primary store. It keeps the PRIMARY_TRACES that
        # reached it last, in the order the tail sampler released them (not the order sent):
        # write one more at a time until both are out, which the primary's own search shows.
        filler = iter(range(6 * PRIMARY_TRACES))

        def evicted() -> bool:
            traced_put(stack, f"archive/filler-{next(filler)}")
            primary = {t.trace_id for t in traces_of(client, PUT_OP, limit=PRIMARY_TRACES)}
            return len(primary) == PRIMARY_TRACES and not primary & {kept, dropped}

        poll(evicted, timeout=90, interval=0.5, message="both first traces evicted")
        assert client.trace(dropped) is None, "a trace not archived outlived the primary store"
        assert client.trace(kept) is not None, "the archived trace is gone"
        text = trace_page(driver, stack, traces[kept])  # read back from the archive
        assert all(span.name in text for span in traces[kept].spans), text[:600]
        browser.screenshot(driver, "jaeger-ui-from-archive")
