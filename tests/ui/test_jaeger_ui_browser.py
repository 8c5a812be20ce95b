"""The Jaeger UI in a real browser (headless Chromium, selenium), served by the local Jaeger
(the built jaeger-ui) over TLS: kvtrace.devstack.browser pins the serving certificate.

- Chromium accepts the pinned certificate and no other;
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
    PUT_OP,
    SPANS_PER_WRITE,
    Stack,
    traced_put,
    traces_of,
    wait_for_traces,
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
        lambda text: re.search(rf"Total Spans:?\s*{spans}\b", text) is not None,
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
