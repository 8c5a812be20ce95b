"""Sampling semantics of docs/design.md section 4, in one place.

- ``production``: the SDK keeps every span (``parentbased_always_on``); the collector's
  ``tail_sampling`` keeps every trace with an ERROR span (unless ``keepErrors: false``),
  every trace slower than ``latencyThreshold``, every trace of the operator's own
  reconciles (service ``kvtrace-operator``), and ``ratio`` of the rest.
- ``development``: everything kept (ratio 1.0), no tail sampling, debug exporter on.
- ``head``: the SDK samples ``parentbased_traceidratio`` with ``ratio``; no tail sampling,
  so errors are sampled like everything else (``keepErrors: true`` is rejected).
- ``retroactive``: the SDK samples ``parentbased_traceidratio`` with ``ratio`` as in head mode,
  and the KV nodes (``--trace-retroactive``, ``node_retroactive_flags``) also record what it
  does not keep into a bounded buffer, keeping every failed or slow operation's trace when it
  ends; no tail sampling (``keepErrors: false`` is rejected: the nodes always keep errors).
"""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render.names import OPERATOR_SERVICE_NAME
from kvtrace_operator.spec import PipelineSpec
from kvtrace_operator.spec.durations import single_unit

PRODUCTION = "production"
DEVELOPMENT = "development"
HEAD = "head"
RETROACTIVE = "retroactive"
MODES = (PRODUCTION, DEVELOPMENT, HEAD, RETROACTIVE)

HEAD_NOTE = (
    "head sampling: the SDK keeps a ratio of traces chosen at the root span, "
    "so errors and slow traces are sampled at that ratio too"
)


RETROACTIVE_NOTE = (
    "retroactive sampling: the KV nodes keep every failed operation, every operation slower "
    "than the latency threshold and a ratio of the rest, decided when each operation ends; "
    "applications head-sample at that ratio (their own errors are sampled too), and a KV trace "
    "kept under a caller's unsampled span lacks the caller's spans"
)


def uses_tail_sampling(spec: PipelineSpec) -> bool:
    return spec.sampling.mode == PRODUCTION


def effective_ratio(spec: PipelineSpec) -> float:
    return 1.0 if spec.sampling.mode == DEVELOPMENT else spec.sampling.ratio


def keeps_errors(spec: PipelineSpec) -> bool:
    """Whether every error trace is kept; unset means yes in production, always in retroactive."""
    if spec.sampling.mode == RETROACTIVE:
        return True
    return uses_tail_sampling(spec) and spec.sampling.keep_errors is not False


def node_retroactive_flags(spec: PipelineSpec) -> list[tuple[str, str]]:
    """The ``kvtrace node serve`` flags of retroactive sampling (none in the other modes):
    the nodes keep what the SDK's ratio sampler keeps, and every operation that fails or takes
    at least ``latencyThreshold``, holding undecided spans within ``retroactive``'s bounds."""
    sampling = spec.sampling
    if sampling.mode != RETROACTIVE:
        return []
    age, threshold = sampling.buffer_age, sampling.latency_threshold
    return [
        ("--trace-retroactive", "true"),
        ("--trace-buffer-size", str(sampling.buffer_bytes)),
        ("--trace-buffer-age", single_unit(age.text, age.field)),
        ("--trace-latency-threshold", single_unit(threshold.text, threshold.field)),
    ]


def debug_exporter_on(spec: PipelineSpec) -> bool:
    return spec.sampling.mode == DEVELOPMENT or spec.exporters.debug_enabled


def records_raw_keys(spec: PipelineSpec) -> bool:
    """A development pipeline that does not hash kvstore.key asks the nodes for raw keys."""
    return spec.sampling.mode == DEVELOPMENT and "kvstore.key" not in spec.redaction.hash_attributes


def two_tier(spec: PipelineSpec) -> bool:
    """More than one collector replica with tail sampling: a load-balancing tier in front."""
    return uses_tail_sampling(spec) and spec.collector.replicas > 1


def sdk_sampler(spec: PipelineSpec) -> list[tuple[str, str]]:
    """``OTEL_TRACES_SAMPLER`` (and its argument) for applications sending to this pipeline."""
    if spec.sampling.mode in (HEAD, RETROACTIVE):
        return [
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", format_ratio(effective_ratio(spec))),
        ]
    return [("OTEL_TRACES_SAMPLER", "parentbased_always_on")]


# The SDK's batch span processor (OTEL_BSP_*), rendered for every application of a pipeline.
# Spans of one trace leave the nodes that took part at most one schedule delay apart (each
# node's processor exports on its own timer), and the tail sampler decides ``decisionWait``
# after the first span it holds: the delay is a quarter of ``decisionWait``, never more than
# the SDK's own 5 s default. Validation then keeps ``decisionWait`` at least
# 2 x (``latencyThreshold`` + ``collector.batch.timeout``) (``min_decision_wait_ns``), so a trace just
# over the threshold has ended, been exported and passed the load-balancing tier's batch with
# a quarter of ``decisionWait`` to spare.
SDK_SCHEDULE_DELAY_MS = 5000  # the SDK's default
EXPORT_BATCH_SIZE = (
    512  # the SDK's default; larger batches hold the interpreter longer while encoded
)
# 8x the SDK's 2048: about 7 s of one node's spans at the overhead benchmark's production load
# (~2,200 spans/s per node), the time the exporter spends retrying (1 + 2 + 4 s backoff) one
# batch the collector does not take; spans beyond it are dropped in the SDK, before any sampler.
QUEUE_SIZE = 16384


def schedule_delay_ms(spec: PipelineSpec) -> int:
    """``OTEL_BSP_SCHEDULE_DELAY``: a quarter of ``decisionWait``, at most 5000 ms."""
    return max(1, min(SDK_SCHEDULE_DELAY_MS, spec.sampling.decision_wait.nanos // 4_000_000))


def min_decision_wait_ns(spec: PipelineSpec) -> int:
    """The shortest ``decisionWait`` that judges whole traces: 2 x (``latencyThreshold`` +
    ``collector.batch.timeout``) (see the comment above ``SDK_SCHEDULE_DELAY_MS``)."""
    return 2 * (spec.sampling.latency_threshold.nanos + spec.collector.batch_timeout.nanos)


def sdk_batch_processor(spec: PipelineSpec) -> list[tuple[str, str]]:
    """The ``OTEL_BSP_*`` variables for applications sending to this pipeline."""
    return [
        ("OTEL_BSP_SCHEDULE_DELAY", str(schedule_delay_ms(spec))),
        ("OTEL_BSP_MAX_QUEUE_SIZE", str(QUEUE_SIZE)),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", str(EXPORT_BATCH_SIZE)),
    ]


def format_ratio(ratio: float) -> str:
    return format(ratio, "g")


def percentage(ratio: float) -> float | int:
    """``ratio`` as a percentage for the probabilistic policy (an int when whole)."""
    value = round(ratio * 100, 6)
    return int(value) if value == int(value) else value


def tail_sampling_config(spec: PipelineSpec) -> dict[str, Any]:
    """The ``tail_sampling`` processor of a production pipeline."""
    sampling = spec.sampling
    policies: list[dict[str, Any]] = []
    if keeps_errors(spec):
        policies.append(
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
        )
    threshold = sampling.latency_threshold.ms
    policies.append({"name": "slow", "type": "latency", "latency": {"threshold_ms": threshold}})
    # The operator's own reconciles are few and are what explains a rolling restart: keep them all.
    policies.append(
        {
            "name": "operator",
            "type": "string_attribute",
            "string_attribute": {"key": "service.name", "values": [OPERATOR_SERVICE_NAME]},
        }
    )
    policies.append(
        {
            "name": "ratio",
            "type": "probabilistic",
            "probabilistic": {"sampling_percentage": percentage(effective_ratio(spec))},
        }
    )
    return {
        "decision_wait": sampling.decision_wait.text,
        "num_traces": sampling.num_traces,
        "policies": policies,
    }
