"""The operator's own Prometheus metrics (``--metrics-port``): reconciles by kind and outcome,
their duration, child actions, and TraceDelivery canaries by reason. Plain counters rendered
in the text exposition format."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator


class Metrics:
    def __init__(self) -> None:
        self.reconciles: Counter[tuple[str, str]] = Counter()  # (kind, outcome)
        self.seconds: dict[str, float] = {}  # kind -> total seconds
        self.children: Counter[tuple[str, str]] = Counter()  # (kind of owner, action)
        self.canaries: Counter[str] = Counter()  # TraceDelivery reason

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
            self.reconciles[(kind, outcome["outcome"])] += 1
            self.seconds[kind] = self.seconds.get(kind, 0.0) + time.monotonic() - start

    def child_actions(self, kind: str, action: str, count: int) -> None:
        if count:
            self.children[(kind, action)] += count

    def canary(self, reason: str) -> None:
        self.canaries[reason] += 1

    def render(self) -> str:
        lines = [
            "# HELP kvtrace_operator_reconciles_total Reconciles by resource kind and outcome.",
            "# TYPE kvtrace_operator_reconciles_total counter",
            *(f'kvtrace_operator_reconciles_total{{kind="{k}",outcome="{o}"}} {n}'
              for (k, o), n in sorted(self.reconciles.items())),
            "# HELP kvtrace_operator_reconcile_seconds_total Time spent reconciling, by kind.",
            "# TYPE kvtrace_operator_reconcile_seconds_total counter",
            *(f'kvtrace_operator_reconcile_seconds_total{{kind="{k}"}} {s:.6f}'
              for k, s in sorted(self.seconds.items())),
            "# HELP kvtrace_operator_child_actions_total Children created, updated or deleted.",
            "# TYPE kvtrace_operator_child_actions_total counter",
            *(f'kvtrace_operator_child_actions_total{{kind="{k}",action="{a}"}} {n}'
              for (k, a), n in sorted(self.children.items())),
            "# HELP kvtrace_operator_canaries_total TraceDelivery canary runs by reason (Delivered, NotFoundInJaeger, ...).",
            "# TYPE kvtrace_operator_canaries_total counter",
            *(f'kvtrace_operator_canaries_total{{reason="{r}"}} {n}' for r, n in sorted(self.canaries.items())),
        ]
        return "\n".join(lines) + "\n"


METRICS = Metrics()
