"""The TraceDelivery canary of a TracingPipeline (the I/O edge of render/canary.py).

Every ``--canary-interval`` seconds a kopf timer (id ``canary``, registered by pipeline.py)
sends one span of service ``kvtrace-operator-canary`` to the pipeline's collector Service,
with the bearer token and CA the pipeline's ``spec.security`` names (read from their
Secrets, kept in memory only for the request, never logged), then looks for it in Jaeger
(with the ``spec.jaeger.query.auth`` credentials or token when it asks for them, verifying
its certificate with TLS) for ``decisionWait`` + ``--canary-timeout`` seconds. The outcome is kept
per pipeline in the operator's runtime (``Runtime.deliveries``, dropped with the pipeline);
the pipeline's reconcile puts it into ``status.conditions`` (TraceDelivery) and
``status.traceDelivery``, so the canary and the reconcile never overwrite each other.

Every network call runs in a worker thread with its own timeout, and kopf runs each timer
in its own task: a slow or unreachable collector or Jaeger never blocks another handler.
Locally (tests, ``kvtrace dev``) the Service names go through the development endpoint map
(``KVTRACE_ENDPOINT_MAP``); TLS is still verified against the Service name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from lightkube import ApiError, AsyncClient

from kvtrace import canary as otlp_canary
from kvtrace.shared.api import PIPELINE
from kvtrace.shared.endpoints import resolve_url
from kvtrace_operator import k8s
from kvtrace_operator.handlers import common
from kvtrace_operator.handlers.metrics import METRICS
from kvtrace_operator.handlers.runtime import Delivery, Runtime
from kvtrace_operator.render import (
    SpecError,
    names,
    query_access,
    security,
    tls,
)
from kvtrace_operator.render.canary import (
    CanaryResult,
    canary_duration_ns,
    decide,
    delivery_status,
    lookup_bound_s,
)
from kvtrace_operator.render.status import find_condition
from kvtrace_operator.spec import PipelineSpec, parse_pipeline

log = logging.getLogger("kvtrace_operator")

SEND_TIMEOUT_S = 5.0
LOOKUP_TIMEOUT_S = 3.0
LOOKUP_PAUSE_S = 0.5
SPAN_NAME = "kvtrace operator canary"


class CredentialsError(Exception):
    """A Secret the pipeline names for its token or CA cannot be read."""


def _key(pipeline: Mapping[str, Any]) -> tuple[str, str]:
    meta = pipeline["metadata"]
    return str(meta["namespace"]), str(meta["name"])


def current(
    runtime: Runtime, pipeline: Mapping[str, Any]
) -> tuple[tuple[str, str, str], dict[str, Any] | None]:
    """The TraceDelivery condition (status, reason, message) and ``status.traceDelivery``
    for the pipeline's status: the last run of this process, else what the status already
    shows (the operator restarted), else Pending; Disabled when the canary is off."""
    interval = runtime.options.canary_interval
    if interval <= 0:
        return decide(None, enabled=False), None
    outcome = runtime.deliveries.get(_key(pipeline))
    if outcome is not None:
        return outcome
    status = pipeline.get("status") or {}
    shown = find_condition(status, "TraceDelivery")
    if shown and shown.get("reason") not in ("Disabled", None):
        return (
            str(shown["status"]),
            str(shown["reason"]),
            str(shown.get("message", "")),
        ), status.get("traceDelivery")
    return decide(None, enabled=True, interval_s=interval), status.get("traceDelivery")


def record(runtime: Runtime, pipeline: Mapping[str, Any], result: CanaryResult) -> Delivery:
    """Decide the condition from ``result`` and keep it for the next status write."""
    key = _key(pipeline)
    before = runtime.deliveries.get(key)
    previous = before[1] if before else (pipeline.get("status") or {}).get("traceDelivery")
    last_success = (previous or {}).get("lastSuccessTime")
    outcome = (
        decide(
            result,
            enabled=True,
            last_success=last_success,
            interval_s=runtime.options.canary_interval,
        ),
        delivery_status(result, previous),
    )
    METRICS.canary(outcome[0][1])
    if before is None or before[0][:2] != outcome[0][:2]:
        log.info("TraceDelivery of TracingPipeline %s/%s: %s %s: %s", *key, *outcome[0])
    runtime.deliveries[key] = outcome
    return outcome


async def _secret_value(client: AsyncClient, namespace: str, name: str, key: str, what: str) -> str:
    try:
        secret = await k8s.get_object(client, k8s.resource_class("v1", "Secret"), name, namespace)
    except ApiError as exc:
        raise CredentialsError(
            f"cannot read Secret {name} ({what}): {exc.status.message}"
        ) from None
    if secret is None:
        raise CredentialsError(f"Secret {name} ({what}) does not exist")
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        raise CredentialsError(f"Secret {name} ({what}) has no key {key!r}")
    try:
        return base64.b64decode(raw).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"Secret {name} ({what}): key {key!r} is not UTF-8 text") from None


async def credentials(
    client: AsyncClient, pipeline: Mapping[str, Any], spec: PipelineSpec
) -> tuple[str | None, str | None]:
    """(bearer token, CA certificate PEM) the pipeline's collector requires, else None."""
    namespace, name = _key(pipeline)
    token = ca = None
    if security.auth(spec):
        ref = security.token_ref(spec, name)
        token = (
            await _secret_value(
                client, namespace, ref["name"], ref["key"], "spec.security.auth token"
            )
        ).strip()
    if (settings := security.tls(spec)) is not None:
        secret, key = tls.client_ca(settings, name)
        ca = await _secret_value(client, namespace, secret, key, "spec.security.tls CA bundle")
    return token, ca


async def query_credentials(
    client: AsyncClient, pipeline: Mapping[str, Any], spec: PipelineSpec
) -> dict[str, str]:
    """What the Jaeger lookup sends (the first line of the Secret key): ``credentials``
    (USER:PASSWORD, HTTP Basic) or ``token`` (bearer, for the query proxy); empty without
    query auth."""
    ref = query_access.credentials_ref(spec, _key(pipeline)[1])
    if ref is None:
        return {}
    value = await _secret_value(
        client, _key(pipeline)[0], ref["name"], ref["key"], "spec.jaeger.query.auth credentials"
    )
    first = (value.strip().splitlines() or [""])[0].strip()
    return (
        {"credentials": first}
        if query_access.mode(spec) == query_access.BASIC
        else {"token": first}
    )


async def _in_thread(limit: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), limit)


async def run(runtime: Runtime, pipeline: Mapping[str, Any]) -> CanaryResult:
    """Send one canary through the pipeline and look for it in Jaeger (bounded in time)."""
    client = runtime.client
    namespace, name = _key(pipeline)
    spec = parse_pipeline(pipeline.get("spec"))
    endpoints = names.pipeline_endpoints(dict(pipeline))
    collector = endpoints["otlpHttp"]
    jaeger = endpoints.get("jaegerQuery")
    trace_id, span_id = otlp_canary.new_ids()

    def result(**fields: Any) -> CanaryResult:
        return CanaryResult(
            trace_id=trace_id, collector=collector, jaeger=jaeger, time=common.now(), **fields
        )

    try:
        token, ca = await credentials(client, pipeline, spec)
        query = await query_credentials(client, pipeline, spec)
    except CredentialsError as exc:
        return result(credentials_error=str(exc))
    end = time.time_ns()
    request = otlp_canary.canary_request(
        trace_id,
        span_id,
        start_ns=end - canary_duration_ns(spec),
        end_ns=end,
        service=otlp_canary.OPERATOR_SERVICE,
        name=SPAN_NAME,
        attributes={"kvtrace.canary.pipeline": f"{namespace}/{name}"},
    )
    try:
        status, body = await _in_thread(
            SEND_TIMEOUT_S + 2,
            otlp_canary.post,
            resolve_url(collector),
            request,
            timeout=SEND_TIMEOUT_S,
            token=token,
            ca_pem=ca,
            server_hostname=urlsplit(collector).hostname,
        )
    except (TimeoutError, *otlp_canary.SEND_ERRORS) as exc:
        return result(send_error=otlp_canary.error_text(exc))
    if status != 200 or jaeger is None:
        return result(http_status=status, http_body=body)
    bound = lookup_bound_s(spec, runtime.options.canary_timeout)
    started = time.monotonic()
    found, error = False, None
    while True:
        try:
            # With TLS on every hop Jaeger's query port serves the pipeline's leaf (the same CA).
            found = await _in_thread(
                LOOKUP_TIMEOUT_S + 2,
                otlp_canary.in_jaeger,
                resolve_url(jaeger),
                trace_id,
                timeout=LOOKUP_TIMEOUT_S,
                ca_pem=ca,
                server_hostname=urlsplit(jaeger).hostname,
                **query,
            )
            error = None
        except (TimeoutError, *otlp_canary.LOOKUP_ERRORS) as exc:
            error = otlp_canary.error_text(exc)
        waited = time.monotonic() - started
        if found or waited >= bound:
            return result(
                http_status=status,
                http_body=body,
                found=found,
                waited_s=waited,
                bound_s=bound,
                jaeger_error=error,
            )
        await asyncio.sleep(LOOKUP_PAUSE_S)


async def probe(runtime: Runtime, pipeline: Mapping[str, Any]) -> bool:
    """One canary run for the timer; False when the pipeline is going away or its spec is
    invalid (nothing kept, nothing to refresh)."""
    pipeline = common.plain(pipeline)
    meta = pipeline["metadata"]
    if meta.get("deletionTimestamp"):
        runtime.forget(PIPELINE, meta["namespace"], meta["name"], meta.get("uid"))
        return False
    try:
        outcome = await run(runtime, pipeline)
    except SpecError:  # the reconcile reports it (InvalidSpec); nothing to probe meanwhile
        return False
    record(runtime, pipeline, outcome)
    return True
