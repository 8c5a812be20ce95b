"""The client HTTP API: /v1/kv/{key}, /v1/cluster, /healthz, /readyz, /metrics.

Served by our lean HTTP/1.1 server (`http_server.py`), not by aiohttp: the aiohttp server
cost ~34 µs of CPU per request, a third of an untraced read. The coordinator's SERVER span
is created here (there is no HTTP auto-instrumentation to bypass: an auto-instrumented
server would also record the URL path, which holds the raw key, in `url.path`); context
comes from the incoming headers through the configured propagators.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from kvnode import telemetry
from kvnode.faults import Fault, match
from kvnode.keys import key_hash
from kvnode.metrics import Metrics
from kvnode.replication.cluster import Cluster
from kvnode.replication.coordinator import Coordinator, NotEnoughReplicas
from kvnode.replication.quorum import required
from kvnode.transport.credentials import Credentials
from kvnode.transport.http_server import BodyTooLarge, Handler, Reply, Request, json_reply
from kvnode.transport.validation import (
    InvalidRequest,
    Limits,
    validate_consistency,
    validate_key,
    validate_value_size,
)

ROUTE = "/v1/kv/{key}"
_PREFIX = "/v1/kv/"
_OPS = {"PUT": "write", "GET": "read", "DELETE": "delete"}
_SPAN_NAMES = {method: f"{method} {ROUTE}" for method in _OPS}  # the SERVER spans' names
_NOT_FOUND = json.dumps({"error": "not_found", "message": "no such key"}).encode()


@dataclass
class ApiState:
    cluster: Cluster
    coordinator: Coordinator
    metrics: Metrics
    limits: Limits
    default_consistency: str
    faults: tuple[Fault, ...] = ()
    credentials: Credentials = field(default_factory=lambda: Credentials(None, None))
    ready: bool = True


def error(
    status: int, code: str, message: str, *, headers: tuple[tuple[str, str], ...] = (), **extra: Any
) -> Reply:
    return json_reply(status, {"error": code, "message": message, **extra}, headers)


def _kv_handler(state: ApiState) -> Callable[[Request, str, str], Awaitable[Reply]]:
    metrics = state.metrics
    cluster = state.cluster
    coord = state.coordinator

    async def handle(request: Request, method: str, raw_key: str) -> Reply:
        start = time.perf_counter()
        op = _OPS[method]
        level = state.default_consistency
        span: Span | None = None
        try:
            level = validate_consistency(request.query("consistency"), state.default_consistency)
            key = validate_key(raw_key, state.limits)
            if method == "PUT":
                validate_value_size(request.content_length, state.limits)
            if telemetry.ENABLED:
                span = _server_span(request, op, level, key, cluster)
            response = await _run(state, coord, request, method, key, level, span)
        except InvalidRequest as exc:
            response = error(exc.status, exc.code, exc.message)
        except BodyTooLarge:
            response = error(
                413,
                "value_too_large",
                f"the value exceeds the limit of {state.limits.max_value} bytes",
            )
        except NotEnoughReplicas as exc:
            response = error(
                503,
                "unavailable",
                str(exc),
                required=exc.needed,
                acked=exc.acked,
                failures=exc.failures,
            )
            if span is not None:
                telemetry.fail(span, exc, "not enough replicas")
        except _InjectedFault as exc:
            response = error(500, "injected_fault", str(exc))
            if span is not None:
                telemetry.fail(span, exc, "injected fault")
        except Exception as exc:  # noqa: BLE001 - the node keeps serving
            response = error(500, "internal", f"{type(exc).__name__}: {exc}")
            if span is not None:
                telemetry.fail(span, exc, "internal error")
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
            coord.finish(span)
        metrics.requests.inc(op, level, str(response.status))
        metrics.latency.observe(time.perf_counter() - start, op)
        return response

    return handle


class _InjectedFault(Exception):
    pass


async def _run(
    state: ApiState,
    coord: Coordinator,
    request: Request,
    method: str,
    key: bytes,
    level: str,
    span: Span | None,
) -> Reply:
    if state.faults:
        fault = match(state.faults, key)
        if fault is not None:
            if fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            else:
                raise _InjectedFault("fault injected for this key prefix (--faults)")
    if method == "GET":
        record, answered, _need = await coord.read(key, level, span)
        if span is not None:
            span.set_attribute("kvstore.replicas.acked", answered)
        if record is None:
            return Reply(404, _NOT_FOUND, "application/json")
        if record.tombstone:
            return error(
                404,
                "not_found",
                "the key was deleted",
                headers=(("X-KV-Version", str(record.version)),),
            )
        return Reply(
            200, record.value, "application/octet-stream", (("X-KV-Version", str(record.version)),)
        )
    value = b""
    if method == "PUT":
        value = await request.read()
        validate_value_size(len(value), state.limits)
    record, acked, _need = await coord.write(key, value, method == "DELETE", level, span)
    if span is not None:
        span.set_attribute("kvstore.replicas.acked", acked)
    return Reply(204, headers=(("X-KV-Version", str(record.version)),))


def _server_span(
    request: Request, op: str, level: str, key: bytes, cluster: Cluster
) -> Span | None:
    """The coordinator's SERVER span, or None when it is not recorded (then no child spans
    and no context to pass on). Attributes are built only for a span that is exported."""
    method = request.method
    replicas = min(cluster.rf, len(cluster.ring.members))
    return telemetry.server_span(
        _SPAN_NAMES[method],
        request.headers,
        _server_attributes,
        (method, op, level, replicas, key),
    )


def _server_attributes(
    method: str, op: str, level: str, replicas: int, key: bytes
) -> dict[str, Any]:
    attrs: dict[str, Any] = {  # lean: every attribute costs on every exported operation
        "http.request.method": method,
        "http.route": ROUTE,
        "db.operation.name": op,
        "kvstore.operation": op,
        "kvstore.consistency": level,
        "kvstore.replicas.required": required(level, replicas),
        "kvstore.key.hash": telemetry.key_hash_attr(key_hash(key)),
    }
    if telemetry.RAW_KEYS:
        attrs["kvstore.key"] = key.decode("utf-8", "replace")
    return attrs


def cluster_view(cluster: Cluster) -> dict[str, Any]:
    ring = cluster.ring
    share: dict[str, float] = {m.id: 0.0 for m in ring.members}
    tokens, owners = ring._tokens, ring._owners  # noqa: SLF001 - read-only view
    space = float(1 << 63)
    for i, token in enumerate(tokens):
        prev = tokens[i - 1] if i else tokens[-1] - (1 << 63)
        share[owners[i]] += (token - prev) / space
    return {
        "id": cluster.id,
        "member": cluster.is_member,
        "epoch": cluster.epoch,
        "replication_factor": cluster.rf,
        "members": [{"id": m.id, "peer_address": m.address} for m in ring.members],
        "ring": {
            "vnodes": ring.vnodes,
            "tokens": len(tokens),
            "ownership": {k: round(v, 4) for k, v in share.items()},
        },
        "hints_pending": cluster.store.hint_counts(),
        "rebalancing": cluster.rebalancing,
        "caught_up": cluster.caught_up,
        "catching_up": cluster.catching_up,
        "membership": {
            "phase": cluster.view.phase,
            "previous": [list(r.ids) for r in cluster.view.previous],
        },
        "rebalanced_epoch": cluster.rebalanced_epoch,
        "keys": cluster.store.count(),
    }


def build_handler(state: ApiState) -> Handler:
    """Route a request: the KV operations, the cluster view, probes and metrics."""
    kv = _kv_handler(state)

    def ready() -> bool:
        cluster = state.cluster
        return (
            state.ready
            and not cluster.store.closed
            and len(cluster.ring.members) > 0
            and cluster.caught_up
        )

    credentials = state.credentials

    async def handler(request: Request) -> Reply:
        path, method = request.path, request.method
        if (
            credentials.auth
            and path not in _OPEN
            and credentials.token_label(request.headers.get("authorization")) is None
        ):
            state.metrics.unauthorized.inc()
            return _UNAUTHORIZED
        if path.startswith(_PREFIX) or path == "/v1/kv":
            if method not in _OPS:
                return error(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed here; use GET, PUT or DELETE",
                    headers=(("Allow", "GET, PUT, DELETE"),),
                )
            key = path[len(_PREFIX) :]
            if not key:
                return error(400, "invalid_key", "the key is empty")
            return await kv(request, method, key)
        if path in _SIMPLE:
            if method != "GET":
                return error(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed here; use GET",
                    headers=(("Allow", "GET"),),
                )
            if path == "/healthz":
                return json_reply(200, {"status": "ok"})
            if path == "/readyz":
                ok = ready()
                return json_reply(200 if ok else 503, {"ready": ok})
            if path == "/metrics":
                return Reply(
                    200,
                    state.metrics.render().encode(),
                    "text/plain; charset=utf-8",
                    (("X-Content-Type-Options", "nosniff"),),
                )
            return json_reply(200, cluster_view(state.cluster))
        return error(404, "not_found", f"no route for {path}")

    return handler


_SIMPLE = frozenset(("/healthz", "/readyz", "/metrics", "/v1/cluster"))
# Without a token: the probes (the kubelet sends none) and the metrics (no keys or values;
# who may scrape is the NetworkPolicy's decision, docs/security.md).
_OPEN = frozenset(("/healthz", "/readyz", "/metrics"))
_UNAUTHORIZED = error(
    401,
    "unauthorized",
    "send Authorization: Bearer TOKEN with a token this cluster accepts "
    "(the KVCluster's NAME-kv-client-token Secret, or a declared client's)",
    headers=(("WWW-Authenticate", 'Bearer realm="kvtrace"'),),
)
