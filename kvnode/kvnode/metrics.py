"""In-process Prometheus metrics: cheap counters and histograms, rendered as text."""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable

_DROP_REASONS = {
    "dropped": "queue_full",
    "failed": "export_failed",
}  # telemetry.stats() key -> reason label
_BUFFER_OUTCOMES = ("kept", "dropped", "expired", "overflow")  # tracing_retro's span outcomes
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, values)) + "}"


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labels = name, help_text, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        out += [f"{self.name}{_labels(self.labels, k)} {v}" for k, v in sorted(self.values.items())]
        return out


class Gauge:
    """A value read when the metrics are rendered (`kind` "counter": a total another part of
    the node keeps itself, such as the span export's counts)."""

    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], dict[tuple[str, ...], float]],
        labels: tuple[str, ...] = (),
        kind: str = "gauge",
    ):
        self.name, self.help, self.read, self.labels, self.kind = (
            name,
            help_text,
            read,
            labels,
            kind,
        )

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        out += [f"{self.name}{_labels(self.labels, k)} {v}" for k, v in sorted(self.read().items())]
        return out


class Histogram:
    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = _LATENCY_BUCKETS,
    ):
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, buckets
        self.series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., +Inf, sum

    def observe(self, seconds: float, *labels: str) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        s[bisect.bisect_left(self.buckets, seconds)] += 1
        s[-1] += seconds

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, s in sorted(self.series.items()):
            base = dict(zip(self.labels, labels))
            total = 0.0
            for bound, n in zip((*self.buckets, "+Inf"), s[:-1]):
                total += n
                le = {**base, "le": str(bound)}
                out.append(f"{self.name}_bucket{_labels(tuple(le), tuple(le.values()))} {total}")
            out.append(f"{self.name}_sum{_labels(self.labels, labels)} {s[-1]}")
            out.append(f"{self.name}_count{_labels(self.labels, labels)} {total}")
        return out


def _rss() -> dict[tuple[str, ...], float]:
    """Resident set size from /proc (Linux); no sample elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return {}
    return {(): float(pages * os.sysconf("SC_PAGE_SIZE"))}


class Metrics:
    """All of one node's metrics (an instance per node keeps tests independent)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "kvnode_requests_total",
            "Client operations by outcome.",
            ("operation", "consistency", "code"),
        )
        self.latency = Histogram(
            "kvnode_request_duration_seconds", "Client operation latency.", ("operation",)
        )
        self.replication_failures = Counter(
            "kvnode_replication_failures_total", "Replica calls that failed.", ("peer", "reason")
        )
        self.hints_stored = Counter(
            "kvnode_hints_stored_total", "Hints written for unreachable replicas."
        )
        self.hints_delivered = Counter(
            "kvnode_hints_delivered_total", "Hints replayed to their replica."
        )
        self.read_repairs = Counter(
            "kvnode_read_repairs_total", "Stale replicas repaired by reads."
        )
        self.anti_entropy_rounds = Counter(
            "kvnode_anti_entropy_rounds_total", "Merkle comparisons with a peer.", ("result",)
        )
        self.anti_entropy_repairs = Counter(
            "kvnode_anti_entropy_repairs_total", "Records repaired by anti-entropy."
        )
        self.rebalanced = Counter(
            "kvnode_rebalance_records_total", "Records streamed to new owners."
        )
        self.peer_requests = Counter(
            "kvnode_peer_requests_total", "Peer protocol requests served.", ("type",)
        )
        self.peer_handshakes = Counter(
            "kvnode_peer_handshakes_total",
            "Peer connections by protocol handshake outcome: ok (a common version), legacy "
            "(a version-1 peer without a handshake), refused (no common version).",
            ("side", "result"),
        )
        self.trace_keeps_sent = Counter(
            "kvnode_trace_keeps_sent_total",
            "Retroactive sampling: KEEP frames sent to replicas of a kept trace.",
        )
        self.unauthorized = Counter(
            "kvnode_unauthorized_total", "Client requests refused: no token or an unknown one."
        )
        self.fsync = Histogram(
            "kvnode_fsync_duration_seconds",
            "Duration of a durable storage commit (one fdatasync of the commit log, shared by its batch).",
        )
        self.gauges: list[Gauge] = []
        self.gauge(
            "process_cpu_seconds_total",
            "User and system CPU time of the node process.",
            lambda: {(): sum(os.times()[:2])},
            kind="counter",
        )
        self.gauge("process_resident_memory_bytes", "Resident memory of the node process.", _rss)

    def gauge(
        self,
        name: str,
        help_text: str,
        read: Callable[[], dict[tuple[str, ...], float]],
        labels: tuple[str, ...] = (),
        kind: str = "gauge",
    ) -> None:
        self.gauges.append(Gauge(name, help_text, read, labels, kind))

    def span_export(self, stats: Callable[[], dict[str, int]]) -> None:
        """The span export's counts (`telemetry.stats()`: ended, exported, failed, dropped,
        queued), read at each scrape; no samples while the node does not export its spans itself
        (tracing off, or the SDK's own pipeline)."""

        def total(key: str) -> Callable[[], dict[tuple[str, ...], float]]:
            return lambda: {(): float(v)} if (v := stats().get(key)) is not None else {}

        def dropped() -> dict[tuple[str, ...], float]:
            s = stats()
            return {(reason,): float(s[key]) for key, reason in _DROP_REASONS.items() if key in s}

        self.gauge(
            "kvnode_spans_ended_total",
            "Spans the node recorded and handed to the export queue.",
            total("ended"),
            kind="counter",
        )
        self.gauge(
            "kvnode_spans_exported_total",
            "Spans the collector accepted.",
            total("exported"),
            kind="counter",
        )
        self.gauge(
            "kvnode_spans_dropped_total",
            "Spans lost: queue_full (export queue full, the oldest span dropped), export_failed "
            "(the collector refused the batch or was unreachable until the exporter gave up).",
            dropped,
            ("reason",),
            kind="counter",
        )
        self.gauge("kvnode_spans_queued", "Spans waiting in the export queue.", total("queued"))

        def buffered() -> dict[tuple[str, ...], float]:
            s = stats()
            return {
                (outcome,): float(s[key])
                for outcome in _BUFFER_OUTCOMES
                if (key := f"buffer_{outcome}") in s
            }

        self.gauge(
            "kvnode_trace_buffer_spans_total",
            "Retroactive sampling: spans of undecided traces by outcome: kept (exported), "
            "dropped (the coordinator dropped the trace), expired (undecided after the buffer "
            "age: a replica's spans of dropped traces), overflow (evicted early: buffer full).",
            buffered,
            ("outcome",),
            kind="counter",
        )
        self.gauge(
            "kvnode_trace_buffer_bytes",
            "Retroactive sampling: estimated bytes held by the buffer of undecided traces.",
            total("buffer_bytes"),
        )
        self.gauge(
            "kvnode_trace_buffer_traces",
            "Retroactive sampling: traces in the buffer (undecided, or kept and still open).",
            total("buffer_traces"),
        )
        self.gauge(
            "kvnode_trace_keeps_received_total",
            "Retroactive sampling: KEEP frames received from coordinators.",
            total("buffer_keeps_received"),
            kind="counter",
        )

    def render(self) -> str:
        lines: list[str] = []
        metrics: list[Counter | Histogram | Gauge] = [
            self.requests,
            self.latency,
            self.replication_failures,
            self.hints_stored,
            self.hints_delivered,
            self.read_repairs,
            self.anti_entropy_rounds,
            self.anti_entropy_repairs,
            self.rebalanced,
            self.peer_requests,
            self.peer_handshakes,
            self.trace_keeps_sent,
            self.unauthorized,
            self.fsync,
            *self.gauges,
        ]
        for metric in metrics:
            lines += metric.render()
        return "\n".join(lines) + "\n"
