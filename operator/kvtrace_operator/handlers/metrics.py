"""The operator's own Prometheus metrics (``--metrics-port``): reconciles by kind and outcome,
their duration (a histogram), child actions, API requests by method and resource, TraceDelivery canaries by reason, the entries
of the run's per-object state (handlers/runtime.py), and the process's own metrics (CPU,
memory, file descriptors, GC), on ``prometheus_client``.

Each :class:`Metrics` has its own registry, so tests count from zero. Imports neither kopf
nor the Kubernetes client.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

# No `_created` series beside every counter and histogram: nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Reconciles take milliseconds (nothing changed) to tens of seconds (dry runs, many children).
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StateEntries:
    """``kvtrace_operator_state_entries{store}``: read from the run's state when scraped."""

    def __init__(self) -> None:
        self.sizes: Callable[[], dict[str, int]] | None = None  # Runtime.sizes, once running

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "kvtrace_operator_state_entries",
            "Per-object entries the operator keeps, by store (locks, requests, ...): back to "
            "their baseline once the objects are gone.",
            labels=("store",),
        )
        for store, count in sorted((self.sizes() if self.sizes else {}).items()):
            family.add_metric((store,), count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.reconciles = Counter(
            "kvtrace_operator_reconciles",
            "Reconciles by resource kind and outcome.",
            ("kind", "outcome"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "kvtrace_operator_reconcile_duration_seconds",
            "How long reconciles took, by kind.",
            ("kind",),
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.children = Counter(
            "kvtrace_operator_child_actions",
            "Children created, updated or deleted.",
            ("kind", "action"),
            registry=self.registry,
        )
        self.api_requests = Counter(
            "kvtrace_operator_api_requests",
            "Requests the reconciles sent to the API server (kopf's own watches and "
            "annotations aside), by HTTP method, resource (plural, /SUBRESOURCE) and dry run.",
            ("method", "resource", "dry_run"),
            registry=self.registry,
        )
        self.canaries = Counter(
            "kvtrace_operator_canaries",
            "TraceDelivery canary runs by reason (Delivered, NotFoundInJaeger, ...).",
            ("reason",),
            registry=self.registry,
        )
        self.state = StateEntries()
        self.registry.register(self.state)

    @contextlib.contextmanager
    def reconcile(self, kind: str) -> Iterator[dict[str, str]]:
        """Time one reconcile; the caller may set ``outcome`` (default success, error on raise)."""
        outcome = {"outcome": "success"}
        start = time.monotonic()
        try:
            yield outcome
        except BaseException:
            outcome["outcome"] = "error"
            raise
        finally:
            self.reconciles.labels(kind, outcome["outcome"]).inc()
            self.duration.labels(kind).observe(time.monotonic() - start)

    def child_actions(self, kind: str, action: str, count: int) -> None:
        if count:
            self.children.labels(kind, action).inc(count)

    def api_request(self, method: str, resource: str, dry_run: bool) -> None:
        self.api_requests.labels(method, resource, str(dry_run).lower()).inc()

    def canary(self, reason: str) -> None:
        self.canaries.labels(reason).inc()

    def render(self) -> str:
        """The Prometheus text exposition of every metric (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry).decode("utf-8")


METRICS = Metrics()
