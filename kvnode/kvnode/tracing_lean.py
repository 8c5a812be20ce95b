"""Lean recording and export of the node's own spans, under the SDK's configuration.

The stock SDK costs ~15-20 µs of the event loop's CPU to create and end a span and ~35 µs
in the exporter thread to encode it. When `opentelemetry-instrument` configured the common
pipeline -- an SDK `TracerProvider` whose only span processor is a `BatchSpanProcessor` over
the OTLP/HTTP protobuf exporter -- the node records its spans as `LeanSpan`s and exports
them itself, reusing everything the environment configured:

- the provider's sampler (`OTEL_TRACES_SAMPLER`, `_ARG`), id generator and resource
  (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`);
- the batch processor's sizes (`OTEL_BSP_SCHEDULE_DELAY`, `_MAX_QUEUE_SIZE`,
  `_MAX_EXPORT_BATCH_SIZE`);
- the configured exporter's HTTP client (`OTEL_EXPORTER_OTLP_*`: endpoint, headers,
  certificate, compression, timeout, and its retries), which receives the bytes of
  `kvnode.tracing_otlp` instead of the SDK's encoding.

`LeanExport` takes the batch processor's place in the provider (delegating to it, so spans
other code creates through the SDK still leave, and flush/shutdown reach both in order).
Any other configuration (console or gRPC exporter, several processors, ...) keeps the SDK's
own spans: `attach` returns None.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler, TraceIdRatioBased
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    get_current_span,
)
from opentelemetry.util.types import Attributes

from kvnode.tracing_held import HeldRemoteSpan, HeldRootSpan, OperationRoots
from kvnode.tracing_otlp import (
    AttributeCache,
    SpanData,
    encode_request,
    encode_span,
    resource_and_scope,
)
from kvnode.tracing_retro import (
    Deferred,
    RetroBuffer,
    random_span_id,
    random_trace_id,
    with_deferred,
)

log = logging.getLogger("kvnode.tracing")

_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_TRACE_ID_LIMIT = TraceIdRatioBased.TRACE_ID_LIMIT


class LeanSpan(trace.Span):
    """A recording span with the subset of the SDK's behaviour the node uses; `end()` hands
    it to the export queue. No span limits apply (the node sets a handful of attributes).
    Ids, flags and trace state are kept as plain values (the W3C header form of the trace
    state): the API's `SpanContext` is built only if someone asks for it."""

    __slots__ = (
        "trace_id",
        "span_id",
        "flags",
        "trace_state",
        "name",
        "kind",
        "parent_id",
        "parent_remote",
        "start_ns",
        "end_ns",
        "attributes",
        "events",
        "status_code",
        "status_message",
        "called",
        "lazy",
        "_export",
        "_ctx",
    )

    def __init__(
        self,
        export: LeanExport | RetroBuffer,
        name: str,
        kind: SpanKind,
        trace_id: int,
        span_id: int,
        flags: int,
        trace_state: str,
        parent_id: int,
        parent_remote: bool,
        attributes: dict[str, Any],
        start_ns: int | None,
    ):
        self._export = export
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.trace_state = trace_state
        self.name = name
        self.kind = kind._value_ + 1  # OTLP's SpanKind (the member's value, not its property)
        self.parent_id = parent_id
        self.parent_remote = parent_remote
        self.attributes = attributes
        self.events: (
            tuple[tuple[str, int, dict[str, Any]], ...] | list[tuple[str, int, dict[str, Any]]]
        ) = ()
        self.status_code = 0
        self.status_message = ""
        self.start_ns = start_ns or time.time_ns()
        self.end_ns = 0
        self.called: list[str] | None = None  # members called under it (retroactive sampling)
        self.lazy: Deferred | None = None  # attributes built only if the span is exported
        self._ctx: SpanContext | None = None

    def traceparent(self) -> tuple[str, str]:
        """(traceparent, tracestate) headers that make a remote span a child of this one."""
        # %-formatting: under half the f-string's CPU with format specs (CPython 3.11)
        ids = (self.trace_id, self.span_id, self.flags)
        return "00-%032x-%016x-%02x" % ids, self.trace_state  # noqa: UP031 - measured faster

    def get_span_context(self) -> SpanContext:
        if self._ctx is None:
            state = TraceState.from_header([self.trace_state]) if self.trace_state else None
            self._ctx = SpanContext(
                self.trace_id, self.span_id, False, TraceFlags(self.flags), state
            )
        return self._ctx

    def is_recording(self) -> bool:
        return self.end_ns == 0

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: dict[str, Any]) -> None:  # type: ignore[override]
        self.attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        self.events = [*self.events, (name, timestamp or time.time_ns(), dict(attributes or {}))]

    def update_name(self, name: str) -> None:
        self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if (
            self.status_code == 1 or code is StatusCode.UNSET
        ):  # OK is final, UNSET changes nothing (spec)
            return
        self.status_code = 2 if code is StatusCode.ERROR else 1
        self.status_message = (description or "") if code is StatusCode.ERROR else ""

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module, qualname = type(exception).__module__, type(exception).__qualname__
        attrs: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        attrs.update(attributes or {})
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_ns:
            return
        self.end_ns = end_time or time.time_ns()
        self._export.emit(self)

    def close(self, end_time: int | None = None) -> bool:
        """End the span without handing it on (retroactive sampling: its trace's decision
        does); False when it had ended already."""
        if self.end_ns:
            return False
        self.end_ns = end_time or time.time_ns()
        return True

    def defer_attributes(self, build: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
        """Attributes `build(*args)` returns, built only if the span leaves the node
        (`materialize`); those set with `set_attribute` win over them."""
        self.lazy = (build, args)

    def materialize(self) -> None:
        """Build the deferred attributes (before the span is encoded)."""
        if self.lazy is not None:
            self.attributes = with_deferred(self.attributes, self.lazy)
            self.lazy = None

    def note_call(self, member: str) -> None:
        """A peer call to `member` under this span (told to keep, should the trace be kept)."""
        if self.called is None:
            self.called = [member]
        else:
            self.called.append(member)

    def data(self) -> SpanData:
        self.materialize()
        return SpanData(
            self.trace_id,
            self.span_id,
            self.parent_id,
            self.parent_remote,
            self.trace_state,
            self.name,
            self.kind,
            self.start_ns,
            self.end_ns,
            self.attributes,
            self.events,
            self.status_code,
            self.status_message,
        )


# The stand-ins are spans to the API (`get_current_span` checks): a read repair under a held
# root is its child.
trace.Span.register(HeldRootSpan)
trace.Span.register(HeldRemoteSpan)


class LeanTracer:
    """Starts `LeanSpan`s with the provider's sampler and id generator (as the SDK's
    `Tracer.start_span` does); a span the sampler does not keep is `INVALID_SPAN`: nothing is
    allocated for it and no context is passed on (replicas record only under a sampled parent).
    The standard samplers' fixed answers (parent-based: follow a sampled parent; always on or
    off) are read once from the sampler's configuration instead of asked per span."""

    def __init__(self, provider: TracerProvider, export: LeanExport):
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        # the SDK's default generator's ids without its method calls (tracing_retro)
        random_ids = type(self.ids) is RandomIdGenerator
        self.trace_ids = random_trace_id if random_ids else self.ids.generate_trace_id
        self.span_ids = random_span_id if random_ids else self.ids.generate_span_id
        self.export = export
        self.root_decision, self.parent_decisions = fixed_decisions(self.sampler)
        self.root_bound = ratio_bound(self.sampler)
        self.root_flags = _SAMPLED_RANDOM if self.ids.is_trace_id_random() else _SAMPLED
        # Retroactive sampling (tracing_retro): a span the sampler does not keep is recorded
        # anyway, not sampled, into this buffer, which decides when the operation ends.
        self.retro: RetroBuffer | None = None

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any] | None,
        parent: Any,
        start_ns: int | None = None,
    ) -> trace.Span:
        if parent is None and self.root_bound is not None:
            return self.start_root(name, kind, attributes, start_ns)
        parent_ctx = get_current_span(parent).get_span_context() if parent is not None else None
        return self.start_under(name, kind, attributes, parent_ctx, start_ns, parent)

    def start_root(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any] | None,
        start_ns: int | None = None,
    ) -> trace.Span:
        """A root span under a trace-id ratio sampler (`root_bound`): `start_under`'s decision
        for a root (the coordinator's SERVER span of every client operation without a caller's
        context), without its general path."""
        trace_id = self.trace_ids()
        export: LeanExport | RetroBuffer = self.export
        flags: int = self.root_flags
        if trace_id & _TRACE_ID_LIMIT >= self.root_bound:  # type: ignore[operator]
            if self.retro is None:
                return INVALID_SPAN
            export, flags = self.retro, flags & ~TraceFlags.SAMPLED
        return LeanSpan(
            export,
            name,
            kind,
            trace_id,
            self.span_ids(),
            flags,
            "",
            0,
            False,
            attributes if attributes is not None else {},
            start_ns,
        )

    def operation_span(
        self, name: str, trace_id: int, span_id: int, attributes: dict[str, Any]
    ) -> LeanSpan:
        """A sampled SERVER span of a client operation without a caller's context (started by
        `roots`, which decided it)."""
        return LeanSpan(
            self.export,
            name,
            SpanKind.SERVER,
            trace_id,
            span_id,
            self.root_flags,
            "",
            0,
            False,
            attributes,
            None,
        )

    def roots(self) -> OperationRoots | None:
        """What starts client operations' root spans under a trace-id ratio sampler (with the
        retroactive buffer, if attached); None under another sampler (the general path)."""
        if self.root_bound is None:
            return None
        return OperationRoots(
            self, self.retro, self.root_bound, self.root_flags, self.trace_ids, self.span_ids
        )

    def span_context(self, trace_id: int, span_id: int, flags: int) -> SpanContext:
        """The context of a local span given by its ids and flags (a stand-in's)."""
        return SpanContext(trace_id, span_id, False, TraceFlags(flags))

    def undecided_span(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        flags: int,
        parent: tuple[int, bool, str],
        attributes: dict[str, Any],
        start_ns: int,
    ) -> LeanSpan:
        """The `LeanSpan` a retroactive stand-in (`tracing_held.HeldRootSpan`,
        `HeldRemoteSpan`) becomes: unsampled, ended into the buffer. `parent`: (span id,
        remote, tracestate header)."""
        assert self.retro is not None
        return LeanSpan(
            self.retro,
            name,
            SpanKind.SERVER,
            trace_id,
            span_id,
            flags & TraceFlags.RANDOM_TRACE_ID,  # the sampled bit clear
            parent[2],
            parent[0],
            parent[1],
            attributes,
            start_ns,
        )

    def start_under(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any] | None,
        parent_ctx: SpanContext | None,
        start_ns: int | None = None,
        context: Any = None,
    ) -> trace.Span:
        """`attributes` become the span's own (callers pass a fresh dict)."""
        if parent_ctx is not None and parent_ctx.is_valid:
            trace_id = parent_ctx.trace_id
            flags = _SAMPLED | (parent_ctx.trace_flags & TraceFlags.RANDOM_TRACE_ID)
            decision = self.parent_decisions.get(
                (parent_ctx.is_remote, parent_ctx.trace_flags.sampled)
            )
            trace_state = parent_ctx.trace_state
        else:
            parent_ctx = None
            trace_id = self.trace_ids()
            flags = _SAMPLED_RANDOM if self.ids.is_trace_id_random() else _SAMPLED
            decision = self.root_decision
            trace_state = None
            if (
                self.root_bound is not None
            ):  # TraceIdRatioBased's own test, without its result object
                decision = (
                    Decision.DROP
                    if trace_id & _TRACE_ID_LIMIT >= self.root_bound
                    else Decision.RECORD_AND_SAMPLE
                )
        export: LeanExport | RetroBuffer = self.export
        if decision is None:
            if context is None and parent_ctx is not None:
                context = trace.set_span_in_context(NonRecordingSpan(parent_ctx))
            result = self.sampler.should_sample(context, trace_id, name, kind, attributes)
            attrs = dict(result.attributes) if result.attributes else {}
            if attributes:
                attrs.update(attributes)
            if result.decision.is_sampled():  # type: ignore[no-untyped-call]
                trace_state = result.trace_state
            elif self.retro is None:
                return INVALID_SPAN
            else:
                export, flags = self.retro, flags & ~TraceFlags.SAMPLED
        else:
            attrs = attributes if attributes is not None else {}
            if decision is not Decision.RECORD_AND_SAMPLE:
                if self.retro is None:
                    return INVALID_SPAN
                export, flags = self.retro, flags & ~TraceFlags.SAMPLED
        parent_id, remote = (
            (parent_ctx.span_id, parent_ctx.is_remote) if parent_ctx is not None else (0, False)
        )
        return LeanSpan(
            export,
            name,
            kind,
            trace_id,
            self.span_ids(),
            flags,
            trace_state.to_header() if trace_state is not None else "",
            parent_id,
            remote,
            attrs,
            start_ns,
        )

    def continue_remote(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        trace_id: int,
        span_id: int,
        flags: int,
        tracestate: str,
    ) -> trace.Span:
        """A span whose parent is a remote span given by its (valid) ids, flags and tracestate
        header: a replica's SERVER span, straight from the peer message."""
        decision = self.parent_decisions.get((True, bool(flags & TraceFlags.SAMPLED)))
        state = TraceState.from_header([tracestate]) if tracestate else None
        if decision is None:
            parent = SpanContext(trace_id, span_id, True, TraceFlags(flags), state)
            return self.start_under(name, kind, attributes, parent)
        export: LeanExport | RetroBuffer = self.export
        out_flags = _SAMPLED | (flags & TraceFlags.RANDOM_TRACE_ID)
        if decision is not Decision.RECORD_AND_SAMPLE:
            if self.retro is None:
                return INVALID_SPAN
            export, out_flags = self.retro, flags & TraceFlags.RANDOM_TRACE_ID
        return LeanSpan(
            export,
            name,
            kind,
            trace_id,
            self.span_ids(),
            out_flags,
            state.to_header() if state is not None else "",
            span_id,
            True,
            attributes,
            None,
        )

    def holds_remote(self) -> bool:
        """Whether a span under an unsampled remote parent goes to the retroactive buffer
        (the sampler drops it, without asking per span): `tracing_held.HeldRemoteSpan` may
        stand for it."""
        return self.retro is not None and self.parent_decisions.get((True, False)) is Decision.DROP


def ratio_bound(sampler: Any) -> int | None:
    """The bound of a ratio sampler deciding root spans (`traceidratio`, or the root of
    `parentbased_traceidratio`): a root is sampled when its trace id's low 64 bits are below
    it. None for other samplers."""
    if type(sampler).should_sample is ParentBased.should_sample:
        sampler = sampler._root  # noqa: SLF001
    if type(sampler).should_sample is TraceIdRatioBased.should_sample:
        return int(sampler.bound)
    return None


def fixed_decisions(
    sampler: Any,
) -> tuple[Decision | None, dict[tuple[bool, bool], Decision | None]]:
    """(decision for a root span, {(parent is remote, parent sampled): decision}) where the
    sampler's answer does not depend on the trace id or the span (None: ask the sampler)."""

    def static(s: Any) -> Decision | None:
        return s._decision if type(s) is StaticSampler else None  # noqa: SLF001

    if type(sampler).should_sample is ParentBased.should_sample:
        return static(sampler._root), {  # noqa: SLF001
            (True, True): static(sampler._remote_parent_sampled),  # noqa: SLF001
            (True, False): static(sampler._remote_parent_not_sampled),  # noqa: SLF001
            (False, True): static(sampler._local_parent_sampled),  # noqa: SLF001
            (False, False): static(sampler._local_parent_not_sampled),  # noqa: SLF001
        }
    decision = static(sampler)
    return decision, dict.fromkeys(
        ((True, True), (True, False), (False, True), (False, False)), decision
    )


class LeanExport(SpanProcessor):
    """The export queue: bounded as the batch processor's (`OTEL_BSP_MAX_QUEUE_SIZE`; the
    oldest span is dropped and counted when full), drained by one thread every
    `OTEL_BSP_SCHEDULE_DELAY` or as soon as a batch is full, encoded here and posted with the
    configured exporter's client. Also the provider's span processor in place of `bsp`."""

    def __init__(
        self,
        bsp: BatchSpanProcessor,
        resource_attributes: dict[str, Any],
        scope: tuple[str, str | None],
    ):
        batch = bsp._batch_processor  # noqa: SLF001 - the SDK's sizes, as configured from OTEL_BSP_*
        self.bsp = bsp
        self.client = bsp.span_exporter._client  # noqa: SLF001 - OTLP/HTTP client: endpoint, headers, TLS, retries
        self.max_queue = batch._max_queue_size  # noqa: SLF001
        self.batch_size = batch._max_export_batch_size  # noqa: SLF001
        self.delay = batch._schedule_delay  # noqa: SLF001
        self.resource, self.scope = resource_and_scope(resource_attributes, *scope)
        self.cache = AttributeCache()
        # LeanSpans, and SpanData of spans retroactive sampling held and then kept
        self.queue: collections.deque[LeanSpan | SpanData] = collections.deque()
        self.wake = threading.Event()
        self.lock = threading.Lock()  # one export at a time (worker, flush)
        self.stopped = False
        self.ended = self.dropped = self.exported = self.failed = 0
        self.thread = threading.Thread(target=self._worker, name="kvnode-span-export", daemon=True)
        self.thread.start()

    # -- the event loop's side -----------------------------------------------------------
    def emit(self, span: LeanSpan | SpanData) -> None:
        queue = self.queue
        self.ended += 1
        if len(queue) >= self.max_queue:
            queue.popleft()
            self.dropped += 1
        queue.append(span)
        if len(queue) >= self.batch_size and not self.wake.is_set():
            self.wake.set()

    # -- the export thread ---------------------------------------------------------------
    def _worker(self) -> None:
        while not self.stopped:
            self.wake.wait(self.delay)
            self.wake.clear()
            self._drain(all_=False)

    def _drain(self, all_: bool) -> None:
        with self.lock:
            first = True
            while self.queue and (first or all_ or len(self.queue) >= self.batch_size):
                first = False
                batch = []
                pop = self.queue.popleft
                for _ in range(min(self.batch_size, len(self.queue))):
                    batch.append(pop())
                self._send(batch)

    def _send(self, batch: list[LeanSpan | SpanData]) -> None:
        try:
            cache = self.cache
            body = encode_request(self.resource, self.scope, [encode_span(s, cache) for s in batch])  # type: ignore[arg-type]
            ok = self.client.export(body).success
        except Exception:  # the node keeps serving; the batch is lost
            log.exception("exporting %d spans failed", len(batch))
            ok = False
        if ok:
            self.exported += len(batch)
        else:
            self.failed += len(batch)

    def stats(self) -> dict[str, int]:
        return {
            "ended": self.ended,
            "exported": self.exported,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": len(self.queue),
        }

    # -- SpanProcessor: spans other code starts through the SDK still go to the batch processor
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.bsp.on_start(span, parent_context)

    def on_end(self, span: Any) -> None:
        self.bsp.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._drain(all_=True)
        return self.bsp.force_flush(timeout_millis)

    def shutdown(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.wake.set()
            self.thread.join(5)
            self._drain(all_=True)
            stats = self.stats()
            log.log(
                logging.WARNING if stats["dropped"] or stats["failed"] else logging.INFO,
                "spans: %s",
                stats,
            )
        self.bsp.shutdown()  # type: ignore[no-untyped-call]


def attach(provider: Any, scope_name: str) -> LeanTracer | None:
    """A `LeanTracer` exporting through the provider's pipeline, when that pipeline is the one
    this module knows how to feed (see the module docstring); None otherwise."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
    except ImportError:
        return None
    if type(provider) is not TracerProvider:
        return None
    multi = getattr(provider, "_active_span_processor", None)
    if type(multi) is not SynchronousMultiSpanProcessor:
        return None
    processors = multi._span_processors  # noqa: SLF001
    if len(processors) != 1 or type(processors[0]) is not BatchSpanProcessor:
        return None
    bsp = processors[0]
    exporter = bsp.span_exporter
    if type(exporter) is not OTLPSpanExporter or not hasattr(
        getattr(exporter, "_client", None), "export"
    ):
        return None
    try:  # the SDK internals read here (pinned SDK version); another version keeps the SDK's spans
        batch = bsp._batch_processor  # noqa: SLF001
        _ = (
            batch._max_queue_size,  # noqa: SLF001
            batch._max_export_batch_size,  # noqa: SLF001
            batch._schedule_delay,  # noqa: SLF001
            multi._lock,  # noqa: SLF001
        )
        fixed_decisions(provider.sampler), ratio_bound(provider.sampler)
    except AttributeError as exc:
        log.warning(
            "OpenTelemetry SDK internals not as expected (%s): the node records its spans through the SDK",
            exc,
        )
        return None
    export = LeanExport(bsp, dict(provider.resource.attributes), (scope_name, None))
    with multi._lock:  # noqa: SLF001
        multi._span_processors = (export,)  # noqa: SLF001
    return LeanTracer(provider, export)
