"""An in-test OTLP/HTTP (protobuf) receiver for the KV node's tracing tests."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kvharness import free_port
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Receiver:
    """Collects every span exported over OTLP/HTTP (protobuf), with its node's id; on `port`
    if given (a node configured while nothing listened there yet)."""

    def __init__(self, port: int | None = None) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.requests: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), request))
                    for rs in request.resource_spans:
                        attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            receiver.spans += [
                                (attrs.get("service.instance.id", "?"), s) for s in ss.spans
                            ]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = port or free_port("127.0.0.1")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: bytes) -> list[tuple[str, Span]]:
        with self.lock:
            return [(node, s) for node, s in self.spans if s.trace_id == trace_id]

    def find(self, predicate: Callable[[str, Span], bool]) -> list[tuple[str, Span]]:
        with self.lock:
            return [(node, s) for node, s in self.spans if predicate(node, s)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
