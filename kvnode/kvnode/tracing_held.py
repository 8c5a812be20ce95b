"""Retroactive sampling's stand-in spans: what the node makes instead of a span for an
operation the sampler did not keep, since most of them are dropped unexported.

- `HeldRootSpan`: the coordinator's SERVER span of a client operation (its ids, start, the
  arguments of its attributes, the members it called), decided when the operation ends, and
  `OperationRoots`, which starts those spans (the trace-id ratio decision, one native call);
- `HeldRemoteSpan`: a replica's SERVER span under an unsampled caller, handed to the buffer
  raw when it ends (`RetroBuffer.hold_remote`).

Either becomes the `tracing_lean.LeanSpan` it stands for only when that is needed: its trace is
kept, or something unusual is asked of it (a status, an exception). Compiled with the node's
hot path (`kvnode.implementation.COMPILED_MODULES`). Imports only the standard library and
`kvnode.tracing_retro`; `tracing_lean` registers the stand-ins as OpenTelemetry spans.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kvnode.tracing_retro import RetroBuffer


class _StandIn:
    """A span of an undecided trace that is not a `tracing_lean.LeanSpan` yet (most never
    become one: their trace is dropped). Anything unusual asked of it (a status, an exception,
    an event, a new name) makes it the `LeanSpan` it stands for first (`full`, through the
    tracer's `undecided_span`), which then behaves as one (an ERROR span leaves at once and
    keeps its trace). `tracing_lean` registers the stand-ins as OpenTelemetry spans."""

    __slots__ = (
        "tracer",
        "buffer",
        "trace_id",
        "flags",
        "name",
        "build",
        "args",
        "start_ns",
        "span",
        "ended",
    )

    def __init__(
        self,
        tracer: Any,
        buffer: RetroBuffer,
        name: str,
        trace_id: int,
        flags: int,
        build: Callable[..., dict[str, Any]],
        args: tuple[Any, ...],
    ) -> None:
        self.tracer = tracer  # the tracing_lean.LeanTracer
        self.buffer = buffer
        self.name = name
        self.trace_id = trace_id
        self.flags = flags
        self.build = build  # its attributes are build(*args), built only if it leaves
        self.args = args
        self.start_ns = time.time_ns()
        self.span: Any = None  # the LeanSpan, once something needed it
        self.ended = False

    def full(self) -> Any:
        raise NotImplementedError

    def is_recording(self) -> bool:
        return not self.ended if self.span is None else bool(self.span.is_recording())

    def get_span_context(self) -> Any:
        return self.full().get_span_context()

    def set_attribute(self, key: str, value: Any) -> None:
        self.full().set_attribute(key, value)

    def set_attributes(self, attributes: Any) -> None:
        self.full().set_attributes(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self.full().add_event(name, attributes, timestamp)

    def update_name(self, name: str) -> None:
        self.full().update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self.full().set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self.full().record_exception(exception, attributes, timestamp, escaped)


class HeldRemoteSpan(_StandIn):
    """A replica's SERVER span under an unsampled remote parent: the peer message's ids
    (parsed once, for the buffer's key), its start and the arguments of its attributes; `end`
    hands them to the buffer raw (`RetroBuffer.hold_remote`), where no span id is drawn and
    no attribute built unless a KEEP comes."""

    __slots__ = ("parent_id", "tracestate")

    def __init__(
        self,
        tracer: Any,
        buffer: RetroBuffer,
        name: str,
        trace_id: int,
        parent_id: int,
        flags: int,
        tracestate: str,
        build: Callable[..., dict[str, Any]],
        args: tuple[Any, ...],
    ) -> None:
        super().__init__(tracer, buffer, name, trace_id, flags, build, args)
        self.parent_id = parent_id
        self.tracestate = tracestate

    def full(self) -> Any:
        """The LeanSpan this stands for (made once, with the same start and attributes)."""
        if self.span is None:
            parent = (self.parent_id, True, self.tracestate)
            span_id = self.buffer.span_ids()
            span = self.tracer.undecided_span(
                self.name, self.trace_id, span_id, self.flags, parent, {}, self.start_ns
            )
            span.lazy = (self.build, self.args)
            self.span = span
        return self.span

    def end(self, end_time: int | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.span is not None:
            self.span.end(end_time)
            return
        self.buffer.hold_remote(
            self.trace_id,
            self.parent_id,
            self.tracestate,
            self.name,
            self.start_ns,
            end_time or time.time_ns(),
            self.build,
            self.args,
        )


class HeldRootSpan(_StandIn):
    """The coordinator's SERVER span of a client operation the sampler did not keep: its ids,
    start, the arguments of its attributes, the attributes set on it and the members called
    under it. `finish` decides its trace when the operation ends (`RetroBuffer.dropped`: most
    are dropped right there, never having been a span); a kept one becomes the `LeanSpan` it
    stands for and is decided as one (`RetroBuffer.decide`)."""

    __slots__ = ("span_id", "attributes", "called")

    def __init__(
        self,
        tracer: Any,
        buffer: RetroBuffer,
        name: str,
        trace_id: int,
        span_id: int,
        flags: int,
        build: Callable[..., dict[str, Any]],
        args: tuple[Any, ...],
    ) -> None:
        super().__init__(tracer, buffer, name, trace_id, flags, build, args)
        self.span_id = span_id
        self.attributes: dict[str, Any] = {}  # shared with the LeanSpan, once made
        self.called: list[str] | None = None

    def traceparent(self) -> tuple[str, str]:
        """(traceparent, tracestate) headers that make a remote span a child of this one."""
        ids = (self.trace_id, self.span_id, self.flags)
        return "00-%032x-%016x-%02x" % ids, ""  # noqa: UP031 - measured faster (LeanSpan's)

    def get_span_context(self) -> Any:
        if self.span is None:
            return self.tracer.span_context(self.trace_id, self.span_id, self.flags)
        return self.span.get_span_context()

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Any) -> None:
        self.attributes.update(attributes)

    def note_call(self, member: str) -> None:
        """A peer call to `member` under this span (told to keep, should the trace be kept)."""
        if self.span is not None:
            self.span.note_call(member)
        elif self.called is None:
            self.called = [member]
        else:
            self.called.append(member)

    def full(self) -> Any:
        """The LeanSpan this stands for: same ids, start, attributes and calls."""
        if self.span is None:
            span = self.tracer.undecided_span(
                self.name,
                self.trace_id,
                self.span_id,
                self.flags,
                (0, False, ""),
                self.attributes,
                self.start_ns,
            )
            span.lazy = (self.build, self.args)
            span.called = self.called
            self.span = span
        return self.span

    def finish(self) -> list[str]:
        """End it and decide its trace: the members to tell to keep theirs (empty: dropped,
        or decided already)."""
        if self.ended:
            return []
        self.ended = True
        end_ns = time.time_ns()
        if self.span is None and self.buffer.dropped(self.trace_id, self.start_ns, end_ns):
            return []
        span = self.full()
        return self.buffer.decide(span) if span.close(end_ns) else []

    def end(self, end_time: int | None = None) -> None:
        """Ended without a decision (the coordinator calls `finish`): held as a span of its
        trace, as any other."""
        if not self.ended:
            self.full().end(end_time)
            self.ended = True


_LOW64 = (1 << 64) - 1  # TraceIdRatioBased compares a trace id's low 64 bits with its bound


class OperationRoots:
    """Starts the SERVER span of a client operation that has no caller's context under a
    trace-id ratio sampler (`OTEL_TRACES_SAMPLER=traceidratio` or `parentbased_traceidratio`:
    the SDK's `TraceIdRatioBased` rule on a fresh trace id, decided here without the general
    start path): a sampled one is the tracer's `LeanSpan` with its attributes built; with
    retroactive sampling (`buffer`) an unsampled one is a `HeldRootSpan`; otherwise None."""

    def __init__(
        self,
        tracer: Any,
        buffer: RetroBuffer | None,
        bound: int,
        flags: int,
        trace_ids: Callable[[], int],
        span_ids: Callable[[], int],
    ) -> None:
        self.tracer = tracer  # the tracing_lean.LeanTracer
        self.buffer = buffer
        self.bound = bound
        self.unsampled_flags = flags & ~1  # the root's W3C flags with the sampled bit clear
        self.trace_ids = trace_ids
        self.span_ids = span_ids

    def start(self, name: str, build: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> Any:
        trace_id = self.trace_ids()
        if trace_id & _LOW64 < self.bound:
            return self.tracer.operation_span(name, trace_id, self.span_ids(), build(*args))
        if self.buffer is None:
            return None
        span_id = self.span_ids()
        flags = self.unsampled_flags
        return HeldRootSpan(self.tracer, self.buffer, name, trace_id, span_id, flags, build, args)
