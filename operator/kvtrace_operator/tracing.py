"""Spans of the operator's own reconciles, exported to one TracingPipeline it manages
(``kvtrace operator run --trace-pipeline NAMESPACE/NAME``, env ``KVTRACE_TRACE_PIPELINE``,
chart value ``tracing.pipeline``), so a rolling restart shows up in Jaeger beside the KV
latency it causes.

Off by default and then free: :func:`span` returns one shared no-op context manager and the
OpenTelemetry SDK is never imported. When on, :func:`enable` installs a tracer provider of
service ``kvtrace-operator`` whose batch processor exports through a switchable exporter:
spans are dropped until the pipeline's reconcile calls :func:`export_to` with the
collector's address and credentials (handlers/self_tracing.py), and follow it when they
change. Each reconcile is a root span ``reconcile KVCluster`` / ``reconcile TracingPipeline``
(namespace, name, generation, outcome) with child spans for its steps (render, drain check,
apply, write status).

Between ``handlers`` and ``k8s`` in the layers contract: no kopf and no Kubernetes client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from kvtrace_operator.render.names import OPERATOR_SERVICE_NAME

log = logging.getLogger("kvtrace_operator")

SERVICE_NAME = OPERATOR_SERVICE_NAME
SCOPE = "kvtrace_operator"
ENV = "KVTRACE_TRACE_PIPELINE"


class _NoSpan:
    """What :func:`span` yields when tracing is off: accepts attributes, records nothing."""

    def set(self, key: str, value: Any) -> None:
        return None


class _LiveSpan:
    def __init__(self, span: Any) -> None:
        self.span = span

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)


_NO_SPAN = _NoSpan()
_NOOP = contextlib.nullcontext(_NO_SPAN)


class _State:
    def __init__(self) -> None:
        self.target: tuple[str, str] | None = None
        self.tracer: Any = None
        self.provider: Any = None
        self.switch: Any = None


_state = _State()


def parse_target(value: str, parameter: str = "--trace-pipeline") -> tuple[str, str]:
    """``NAMESPACE/NAME`` of a TracingPipeline; ValueError naming ``parameter`` otherwise."""
    namespace, slash, name = value.strip().partition("/")
    if not slash or not namespace or not name or "/" in name:
        raise ValueError(
            f"{parameter}: expected NAMESPACE/NAME of a TracingPipeline, got {value!r}"
        )
    return namespace, name


def target() -> tuple[str, str] | None:
    """The pipeline the operator's spans go to, None when tracing is off."""
    return _state.target


def enabled() -> bool:
    return _state.tracer is not None


def enable(namespace: str, name: str) -> None:
    """Install the tracer provider (idempotent); spans wait for :func:`export_to`."""
    if _state.tracer is not None:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.name": SERVICE_NAME, "kvtrace.trace_pipeline": f"{namespace}/{name}"}
    if os.environ.get("POD_ID"):
        attributes["k8s.pod.name"] = os.environ["POD_ID"]
    provider = TracerProvider(resource=Resource.create(attributes))
    switch = _switchable_exporter()
    provider.add_span_processor(BatchSpanProcessor(switch))
    _state.provider, _state.switch = provider, switch
    _state.tracer = provider.get_tracer(SCOPE)
    _state.target = (namespace, name)
    log.info("tracing the operator's reconciles into TracingPipeline %s/%s", namespace, name)


def export_to(url: str, *, token: str | None = None, ca_pem: str | None = None) -> None:
    """Point the exporter at the collector's OTLP/HTTP ``url`` (no-op when unchanged)."""
    if _state.switch is not None:
        _state.switch.point(url, token, ca_pem)


def shutdown() -> None:
    """Flush and stop (at operator shutdown)."""
    if _state.provider is not None:
        _state.provider.shutdown()


def span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one (a root span when there is none); yields an object
    with ``set(key, value)``. An exception marks the span ERROR and is re-raised."""
    if _state.tracer is None:
        return _NOOP
    return _live(name, attributes or {})


@contextlib.contextmanager
def _live(name: str, attributes: Mapping[str, Any]) -> Iterator[_LiveSpan]:
    with _state.tracer.start_as_current_span(name, attributes=dict(attributes)) as current:
        yield _LiveSpan(current)


@contextlib.contextmanager
def reconcile(kind: str, obj: Mapping[str, Any], result: Mapping[str, str]) -> Iterator[Any]:
    """The root span of one reconcile; its outcome is ``result["outcome"]`` at the end (the
    dict METRICS.reconcile yields), ``error`` when an exception escapes."""
    if _state.tracer is None:
        yield _NO_SPAN
        return
    meta = obj.get("metadata") or {}
    with span(
        f"reconcile {kind}",
        {
            "k8s.namespace.name": str(meta.get("namespace", "")),
            "kvtrace.resource.kind": kind,
            "kvtrace.resource.name": str(meta.get("name", "")),
            "kvtrace.resource.generation": int(meta.get("generation") or 0),
        },
    ) as root:
        try:
            yield root
        except BaseException:
            root.set("kvtrace.reconcile.outcome", "error")
            raise
        root.set("kvtrace.reconcile.outcome", result.get("outcome", "success"))


def _switchable_exporter() -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Switchable(SpanExporter):
        """Delegates to an OTLP/HTTP exporter for the current address; drops spans while
        there is none (the pipeline not reconciled yet)."""

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.current: Any = None
            self.key: tuple[str, str | None, str | None] | None = None
            self.ca_file: str | None = None

        def point(self, url: str, token: str | None, ca_pem: str | None) -> None:
            key = (url, token, ca_pem)
            with self.lock:
                if key == self.key:
                    return
                old, old_ca = self.current, self.ca_file
                self.ca_file = None
                if ca_pem:
                    fd, self.ca_file = tempfile.mkstemp(
                        prefix="kvtrace-operator-ca-", suffix=".crt"
                    )
                    with os.fdopen(fd, "w") as handle:
                        handle.write(ca_pem)
                headers = {"authorization": f"Bearer {token}"} if token else None
                self.current = OTLPSpanExporter(
                    endpoint=url.rstrip("/") + "/v1/traces",
                    headers=headers,
                    certificate_file=self.ca_file,
                    timeout=5,
                )
                self.key = key
            log.info("operator spans go to %s", url)
            if old is not None:
                old.shutdown()
            if old_ca:
                with contextlib.suppress(OSError):
                    os.unlink(old_ca)

        def export(self, spans: Any) -> Any:
            with self.lock:
                current = self.current
            if current is None:
                return SpanExportResult.SUCCESS  # nowhere to send yet: dropped
            return current.export(spans)

        def shutdown(self) -> None:
            with self.lock:
                current, self.current = self.current, None
            if current is not None:
                current.shutdown()
            if self.ca_file:
                with contextlib.suppress(OSError):
                    os.unlink(self.ca_file)

    return Switchable()
