"""The TracingPipeline's ``TraceDelivery`` condition: what the operator's periodic canary
trace (handlers/canary.py) proves about the pipeline, as a pure decision.

The canary is one span sent as OTLP/HTTP to the collector's Service, with the pipeline's
bearer token and CA when ``spec.security`` asks for them, then looked up in Jaeger by its
trace id. :func:`decide` turns what happened into the condition's status, reason and message:

========================  =======  ===========================================================
reason                    status   meaning
========================  =======  ===========================================================
Delivered                 True     found in Jaeger within the bound
CollectorUnreachable      False    no HTTP answer from the collector (refused, timeout, TLS)
Rejected                  False    the collector answered, but not 200 (401 token, 503 limiter)
CredentialsUnavailable    False    the token or CA Secret the pipeline names cannot be read
NotFoundInJaeger          False    accepted, but not in Jaeger within the bound (or Jaeger's
                                   query API did not answer)
JaegerDisabled            Unknown  accepted; spec.jaeger.enabled is false: nothing to look in
Pending                   Unknown  no canary has run yet
Disabled                  Unknown  the operator runs with ``--canary-interval 0``
========================  =======  ===========================================================

``Ready`` does not depend on ``TraceDelivery``: Ready says the components run as rendered,
TraceDelivery says whether a trace gets through them end to end (a remote Jaeger outage
must not flap the pipeline's Ready, and KVClusters never look at either).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from kvtrace_operator.render import sampling
from kvtrace_operator.spec import PipelineSpec

CONDITION = "TraceDelivery"
DELIVERED = "Delivered"
COLLECTOR_UNREACHABLE = "CollectorUnreachable"
REJECTED = "Rejected"
CREDENTIALS_UNAVAILABLE = "CredentialsUnavailable"
NOT_FOUND_IN_JAEGER = "NotFoundInJaeger"
JAEGER_DISABLED = "JaegerDisabled"
PENDING = "Pending"
DISABLED = "Disabled"

DEFAULT_INTERVAL_S = 60.0
DEFAULT_TIMEOUT_S = 20.0  # Jaeger lookup slack on top of the tail-sampling decision wait
BODY_CHARS = 200


@dataclasses.dataclass(frozen=True)
class CanaryResult:
    """What one canary run observed (filled in by the I/O edge)."""

    trace_id: str
    collector: str  # the collector URL the canary was sent to
    time: str  # when the run ended (RFC 3339)
    jaeger: str | None = None  # the Jaeger query URL; None when spec.jaeger.enabled is false
    credentials_error: str | None = None
    send_error: str | None = None  # no HTTP answer
    http_status: int | None = None
    http_body: str = ""
    found: bool = False
    waited_s: float = 0.0  # from the accepted export to the last lookup
    bound_s: float = 0.0  # how long Jaeger was given
    jaeger_error: str | None = None  # the last lookup failure, if any


def canary_duration_ns(spec: PipelineSpec) -> int:
    """Longer than the latency threshold, so production tail sampling keeps the canary."""
    return spec.sampling.latency_threshold.nanos + 100_000_000


def lookup_bound_s(spec: PipelineSpec, slack_s: float = DEFAULT_TIMEOUT_S) -> float:
    """How long to look for the canary in Jaeger: the tail-sampling decision wait (the
    collector holds every trace that long) plus ``slack_s``."""
    wait = spec.sampling.decision_wait.seconds if sampling.uses_tail_sampling(spec) else 0.0
    return wait + slack_s


def _since(last_success: str | None) -> str:
    return f"; last delivered at {last_success}" if last_success else "; no canary delivered yet"


def decide(
    result: CanaryResult | None,
    *,
    enabled: bool,
    last_success: str | None = None,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> tuple[str, str, str]:
    """(status, reason, message) of the TraceDelivery condition."""
    if not enabled:
        return (
            "Unknown",
            DISABLED,
            (
                "the operator's canary trace is off (kvtrace operator run "
                "--canary-interval 0, chart value canary.interval)"
            ),
        )
    if result is None:
        return "Unknown", PENDING, f"the first canary trace is sent within {interval_s:g}s"
    canary = f"canary trace {result.trace_id}"
    if result.credentials_error:
        return (
            "False",
            CREDENTIALS_UNAVAILABLE,
            (f"{canary} not sent: {result.credentials_error}" + _since(last_success)),
        )
    if result.send_error:
        return (
            "False",
            COLLECTOR_UNREACHABLE,
            (
                f"{canary} could not be sent to {result.collector}: {result.send_error}"
                + _since(last_success)
            ),
        )
    if result.http_status != 200:
        body = " ".join(result.http_body.split())[:BODY_CHARS]
        hint = {
            401: " (the bearer token is missing or wrong)",
            503: " (the collector refuses data: memory limiter or a full queue)",
        }.get(result.http_status or 0, "")
        return (
            "False",
            REJECTED,
            (
                f"{result.collector} answered HTTP {result.http_status} to {canary}{hint}"
                + (f": {body}" if body else "")
                + _since(last_success)
            ),
        )
    if result.jaeger is None:
        return (
            "Unknown",
            JAEGER_DISABLED,
            (
                f"{canary} accepted by {result.collector}; spec.jaeger.enabled is false, so its delivery "
                "to the pipeline's exporters cannot be checked"
            ),
        )
    if result.found:
        return (
            "True",
            DELIVERED,
            (
                f"{canary} sent to {result.collector} found in Jaeger at "
                f"{result.jaeger} after {result.waited_s:.1f}s"
            ),
        )
    why = f"; last Jaeger query error: {result.jaeger_error}" if result.jaeger_error else ""
    return (
        "False",
        NOT_FOUND_IN_JAEGER,
        (
            f"{canary} accepted by {result.collector} but not found in Jaeger at {result.jaeger} within "
            f"{result.bound_s:g}s{why}" + _since(last_success)
        ),
    )


def delivery_status(
    result: CanaryResult | None, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``status.traceDelivery``: the last run and the last success (kept across failures)."""
    previous = previous or {}
    if result is None:
        return dict(previous)
    status: dict[str, Any] = {"lastProbeTime": result.time, "traceID": result.trace_id}
    last_success = previous.get("lastSuccessTime")
    if result.found:
        last_success = result.time
        status["latencySeconds"] = f"{result.waited_s:.1f}"
    if last_success:
        status["lastSuccessTime"] = last_success
    return status
