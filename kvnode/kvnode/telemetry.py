"""Lean span helpers over the OpenTelemetry API.

Tracing is configured only by the standard `OTEL_*` environment (the node runs under
`opentelemetry-instrument`). `setup()` looks once at the global tracer provider: when the
SDK is absent or disabled (`OTEL_SDK_DISABLED=true`), `ENABLED` stays False and callers skip
every span call, so untraced nodes pay one attribute check per operation. When the SDK
was configured with the usual OTLP/HTTP batch pipeline, spans are recorded and exported by
`kvnode.tracing_lean` (same sampler, resource, batch sizes and exporter client; a hand-written
OTLP encoding) at a fraction of the SDK's per-span cost; `LEAN` says which path is active.
With retroactive sampling (`setup(retro=...)`, lean path only) the spans the sampler does not
keep are recorded too, into `kvnode.tracing_retro`'s buffer (`RETRO`), and the coordinator
decides when the operation ends (`finish`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENABLED = False
LEAN: Any = None  # the tracing_lean.LeanTracer when the lean path is active
RETRO: Any = None  # the tracing_retro.RetroBuffer with retroactive sampling
RAW_KEYS = False  # development only: also record the raw key (`--trace-raw-keys`)
_tracer: Any = trace.NoOpTracer()
_w3c = TraceContextTextMapPropagator()

SERVER = SpanKind.SERVER
CLIENT = SpanKind.CLIENT
INTERNAL = SpanKind.INTERNAL


_fields: frozenset[str] = frozenset()
_lean_span: type | None = None  # tracing_lean.LeanSpan when the lean path is active
_held_remote: Any = None  # tracing_held.HeldRemoteSpan when a replica may hold spans raw
_held_root: type | None = None  # tracing_held.HeldRootSpan with retroactive sampling
_roots: Any = None  # tracing_held.OperationRoots under a trace-id ratio sampler (lean path)
# W3C trace flags (two hex digits) with the sampled bit clear
_UNSAMPLED_FLAGS = frozenset(f"{i:02x}" for i in range(0, 256, 2))


@dataclass(frozen=True)
class Retroactive:
    """Retroactive sampling's bounds (`--trace-retroactive` and friends, docs/tracing.md)."""

    buffer_bytes: int
    buffer_age: float  # seconds an undecided trace is held
    latency_threshold: float  # seconds: an operation at least this long is kept


def setup(raw_keys: bool = False, lean: bool = True, retro: Retroactive | None = None) -> bool:
    global ENABLED, RAW_KEYS, LEAN, RETRO, _tracer, _fields, _lean_span, _held_remote, _held_root
    global _roots
    provider = trace.get_tracer_provider()
    tracer = provider.get_tracer("kvnode")
    ENABLED = not isinstance(tracer, (trace.NoOpTracer, trace.ProxyTracer))
    RAW_KEYS = raw_keys and ENABLED
    _tracer = tracer
    LEAN = RETRO = None
    _lean_span = _held_remote = _held_root = _roots = None
    if ENABLED and lean:
        from kvnode import tracing_lean

        LEAN = tracing_lean.attach(provider, "kvnode")
        if LEAN is not None:
            _tracer = LEAN
            _lean_span = tracing_lean.LeanSpan
    if ENABLED and retro is not None:
        if LEAN is None:
            logging.getLogger("kvnode.tracing").warning(
                "retroactive sampling needs the node's own span export (an OTLP/HTTP batch "
                "pipeline): only the sampler (OTEL_TRACES_SAMPLER) decides"
            )
        else:
            from kvnode.tracing_retro import RetroBuffer

            RETRO = LEAN.retro = RetroBuffer(
                LEAN.export.emit,
                retro.buffer_bytes,
                retro.buffer_age,
                retro.latency_threshold,
                time.time_ns,
                LEAN.span_ids,
            )
            from kvnode.tracing_held import HeldRemoteSpan, HeldRootSpan

            _held_root = HeldRootSpan
            if LEAN.holds_remote():
                _held_remote = HeldRemoteSpan
    if LEAN is not None:
        _roots = LEAN.roots()
    _fields = frozenset(f.lower() for f in propagate.get_global_textmap().fields)
    return ENABLED


def undecided(span: Span) -> bool:
    """A span of this node that retroactive sampling holds until its trace is decided."""
    if RETRO is None:
        return False
    kind = type(span)
    return kind is _held_root or (kind is _lean_span and not span.flags & 1)  # type: ignore[attr-defined]


def describe(span: Span, build: Callable[..., dict[str, Any]], *args: Any) -> None:
    """Set the attributes `build(*args)` returns on `span` (right after starting it). With
    retroactive sampling an undecided span builds them only if its trace is kept: most are
    dropped, and their attributes (a key hash, a few strings) would be built for nothing."""
    if undecided(span):
        span.defer_attributes(build, args)  # type: ignore[attr-defined]
    else:
        span.set_attributes(build(*args))


def note_call(span: Span, member: str) -> None:
    """The coordinator called `member` under `span` (told to keep, should the trace be kept)."""
    if undecided(span):
        span.note_call(member)  # type: ignore[attr-defined]


def finish(span: Span) -> list[str]:
    """End the coordinator's SERVER span of a client operation; with retroactive sampling,
    decide its trace: the members to tell to keep theirs (empty: dropped, or decided already)."""
    if type(span) is _held_root:
        return span.finish()  # type: ignore[attr-defined, no-any-return]
    if undecided(span) and span.close():  # type: ignore[attr-defined]
        return RETRO.decide(span)  # type: ignore[no-any-return]
    span.end()
    return []


def expire_traces() -> None:
    """Retroactive sampling: free the buffer of traces older than its age (periodic)."""
    if RETRO is not None:
        RETRO.expire()


def keep_trace(trace_id: int) -> None:
    """A coordinator kept `trace_id`: export this node's spans of it (a KEEP peer frame)."""
    if RETRO is not None:
        RETRO.keep(trace_id)


def stats() -> dict[str, int]:
    """Spans ended, exported, failed (the collector refused them or was unreachable until the
    exporter gave up) and dropped (export queue full), on the lean path; empty otherwise."""
    if LEAN is None:
        return {}
    return {**LEAN.export.stats(), **(RETRO.stats() if RETRO is not None else {})}


def incoming_context(headers: Mapping[str, str]) -> Context | None:
    """Context from request headers through the configured propagators (OTEL_PROPAGATORS);
    skipped when no header any of them reads is present (the common case for clients)."""
    if _fields.isdisjoint(headers):
        return None
    return propagate.extract(headers)


def server_span(
    name: str,
    headers: Mapping[str, str],
    build: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
) -> Span | None:
    """The coordinator's SERVER span of a client operation, continuing the caller's context
    from `headers` (if any), with the attributes `build(*args)` returns (`describe`); None when
    it is not recorded (then no child spans and no context to pass on)."""
    parent = incoming_context(headers)
    if parent is None and _roots is not None:
        return _roots.start(name, build, args)  # type: ignore[no-any-return]  # the common case
    span = start(name, SERVER, None, parent)
    if not span.is_recording():
        span.end()
        return None
    describe(span, build, *args)
    return span


def start(
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any] | None,
    parent: Context | None = None,
    start_ns: int | None = None,
) -> Span:
    if LEAN is not None:
        return LEAN.start(name, kind, attributes, parent, start_ns)  # type: ignore[no-any-return]
    return _tracer.start_span(  # type: ignore[no-any-return]
        name, context=parent, kind=kind, attributes=attributes, start_time=start_ns
    )


def start_child(
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any] | None,
    parent: Span,
    start_ns: int | None = None,
) -> Span:
    return start(name, kind, attributes, trace.set_span_in_context(parent), start_ns)


def record_failure(
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    parent: Span,
    start_ns: int,
    exc: BaseException | None,
    message: str,
) -> None:
    """A child span recorded after the fact, from `start_ns` to now, with status ERROR: how a
    failed call that had no span of its own while it ran stays visible in the trace."""
    span = start_child(name, kind, attributes, parent, start_ns)
    fail(span, exc, message)
    span.end()


def fail(span: Span, exc: BaseException | None, message: str) -> None:
    if exc is not None:
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, message))


def _common_traceparent(traceparent: str) -> tuple[int, int, int] | None:
    """(trace id, parent id, flags) of a valid traceparent in the common form (version 00, as
    our peers send it), parsed directly in a fraction of the W3C propagator's CPU (its
    regular expressions); None for anything else."""
    if (
        len(traceparent) == 55
        and traceparent.startswith("00-")
        and traceparent[35] == "-" == traceparent[52]
    ):
        try:
            trace_id, span_id = int(traceparent[3:35], 16), int(traceparent[36:52], 16)
            flags = int(traceparent[53:55], 16)
        except ValueError:
            return None
        if trace_id and span_id:
            return trace_id, span_id, flags
    return None


def remote_parent(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    """The remote parent carried in a peer message (None: none, or not valid); a traceparent
    not in the common form goes through the W3C propagator."""
    if not traceparent:
        return None
    common = _common_traceparent(traceparent)
    if common is not None:
        state = TraceState.from_header([tracestate]) if tracestate else None
        return SpanContext(
            common[0],
            common[1],
            is_remote=True,
            trace_flags=TraceFlags(common[2]),
            trace_state=state,
        )
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = trace.get_current_span(_w3c.extract(carrier)).get_span_context()
    return ctx if ctx.is_valid else None


def context_from(traceparent: str | None, tracestate: str | None) -> Context | None:
    parent = remote_parent(traceparent, tracestate)
    return trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None


def start_remote(
    name: str, kind: SpanKind, attributes: dict[str, Any], traceparent: str, tracestate: str
) -> Span:
    """A span continuing the caller's trace carried in a peer message (a replica's SERVER span)."""
    if LEAN is not None:
        common = _common_traceparent(traceparent)
        if common is not None:
            return LEAN.continue_remote(name, kind, attributes, *common, tracestate)  # type: ignore[no-any-return]
        return LEAN.start_under(name, kind, attributes, remote_parent(traceparent, tracestate))  # type: ignore[no-any-return]
    return start(name, kind, attributes, context_from(traceparent, tracestate))


def replica_span(
    name: str,
    traceparent: str,
    tracestate: str,
    build: Callable[..., dict[str, Any]],
    args: tuple[Any, ...],
) -> Span:
    """A replica's SERVER span continuing the caller's trace carried in a peer message, with
    the attributes `build(*args)` returns (`describe`). With retroactive sampling, under an
    unsampled parent in the common form (as our peers send it), only the trace and parent ids
    are parsed and no span is made unless the trace is kept (`tracing_held.HeldRemoteSpan`)."""
    if _held_remote is not None and traceparent[53:] in _UNSAMPLED_FLAGS:
        common = _common_traceparent(traceparent)
        if common is not None:
            trace_id, parent_id, flags = common
            return _held_remote(  # type: ignore[no-any-return]
                LEAN, RETRO, name, trace_id, parent_id, flags, tracestate, build, args
            )
    span = start_remote(name, SERVER, {}, traceparent, tracestate)
    describe(span, build, *args)
    return span


def w3c_headers(span: Span) -> tuple[str, str]:
    """(traceparent, tracestate) that make a remote span a child of `span`."""
    if type(span) is _lean_span or type(span) is _held_root:
        return span.traceparent()  # type: ignore[attr-defined, no-any-return]
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return "", ""
    return (
        f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}",
        ctx.trace_state.to_header() if ctx.trace_state else "",
    )


def key_hash_attr(khash: int) -> str:
    return f"{khash:016x}"
