"""The client HTTP API (aiohttp): /v1/kv/{key}, /v1/cluster, /healthz, /readyz, /metrics.

The coordinator's SERVER span is created here, not by the aiohttp-server auto
instrumentation: that middleware records the URL path (which holds the raw key) in
`http.target`/`url.path`, and costs more than the node can afford on its hot path. The app
is therefore built from `aiohttp.web_app.Application`, which the instrumentation does not
patch; context still comes from the incoming headers through the configured propagators.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_app import Application
from opentelemetry.trace import Span

from kvnode import telemetry
from kvnode.faults import Fault, match
from kvnode.keys import key_hash
from kvnode.metrics import Metrics
from kvnode.replication.cluster import Cluster
from kvnode.replication.coordinator import Coordinator, NotEnoughReplicas
from kvnode.replication.quorum import required
from kvnode.transport.validation import InvalidRequest, Limits, validate_consistency, validate_key, validate_value_size

ROUTE = "/v1/kv/{key}"
_OPS = {"PUT": "write", "GET": "read", "DELETE": "delete"}


@dataclass
class ApiState:
    cluster: Cluster
    coordinator: Coordinator
    metrics: Metrics
    limits: Limits
    default_consistency: str
    faults: tuple[Fault, ...] = ()
    ready: bool = True


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": code, "message": message, **extra}), content_type="application/json"
    )


def _kv_handler(state: ApiState) -> Any:
    metrics = state.metrics
    cluster = state.cluster
    coord = state.coordinator

    async def handle(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        method = request.method
        op = _OPS[method]
        level = state.default_consistency
        span: Span | None = None
        try:
            level = validate_consistency(request.query.get("consistency"), state.default_consistency)
            key = validate_key(request.match_info.get("key", ""), state.limits)
            if method == "PUT":
                validate_value_size(request.content_length, state.limits)
            if telemetry.ENABLED:
                span = _server_span(request, op, level, key, cluster)
                if not span.is_recording():  # not sampled: no child spans, no context to pass
                    span.end()
                    span = None
            response = await _run(state, coord, request, method, key, level, span)
        except InvalidRequest as exc:
            response = error(exc.status, exc.code, exc.message)
        except web.HTTPRequestEntityTooLarge:
            response = error(413, "value_too_large", f"the value exceeds the limit of {state.limits.max_value} bytes")
        except NotEnoughReplicas as exc:
            response = error(503, "unavailable", str(exc), required=exc.needed, acked=exc.acked, failures=exc.failures)
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
            span.end()
        metrics.requests.inc(op, level, str(response.status))
        metrics.latency.observe(time.perf_counter() - start, op)
        return response

    return handle


class _InjectedFault(Exception):
    pass


async def _run(state: ApiState, coord: Coordinator, request: web.Request, method: str, key: bytes, level: str, span: Span | None) -> web.StreamResponse:
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
            return error(404, "not_found", "no such key")
        if record.tombstone:
            resp = error(404, "not_found", "the key was deleted")
            resp.headers["X-KV-Version"] = str(record.version)
            return resp
        return web.Response(body=record.value, headers={"X-KV-Version": str(record.version)}, content_type="application/octet-stream")
    value = b""
    if method == "PUT":
        value = await request.read()
        validate_value_size(len(value), state.limits)
    record, acked, _need = await coord.write(key, value, method == "DELETE", level, span)
    if span is not None:
        span.set_attribute("kvstore.replicas.acked", acked)
    return web.Response(status=204, headers={"X-KV-Version": str(record.version)})


def _server_span(request: web.Request, op: str, level: str, key: bytes, cluster: Cluster) -> Span:
    khash = key_hash(key)
    attrs: dict[str, Any] = {  # lean: every attribute costs on every traced operation
        "http.request.method": request.method,
        "http.route": ROUTE,
        "db.operation.name": op,
        "kvstore.operation": op,
        "kvstore.consistency": level,
        "kvstore.replicas.required": required(level, min(cluster.rf, len(cluster.ring.members))),
        "kvstore.key.hash": telemetry.key_hash_attr(khash),
    }
    if telemetry.RAW_KEYS:
        attrs["kvstore.key"] = key.decode("utf-8", "replace")
    parent = telemetry.incoming_context(request.headers)
    return telemetry.start(f"{request.method} {ROUTE}", telemetry.SERVER, attrs, parent)


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
        "ring": {"vnodes": ring.vnodes, "tokens": len(tokens), "ownership": {k: round(v, 4) for k, v in share.items()}},
        "hints_pending": cluster.store.hint_counts(),
        "rebalancing": cluster.rebalancing,
        "rebalanced_epoch": cluster.rebalanced_epoch,
        "keys": cluster.store.count(),
    }


def build_app(state: ApiState) -> web.Application:
    app = Application(client_max_size=state.limits.max_value + 1)
    kv = _kv_handler(state)

    async def empty_key(request: web.Request) -> web.Response:
        return error(400, "invalid_key", "the key is empty")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ok = state.ready and not state.cluster.store.closed and len(state.cluster.ring.members) > 0
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=state.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def cluster(request: web.Request) -> web.Response:
        return web.json_response(cluster_view(state.cluster))

    for method in ("PUT", "GET", "DELETE"):
        app.router.add_route(method, r"/v1/kv/{key:[\s\S]+}", kv)
        app.router.add_route(method, "/v1/kv/", empty_key)
        app.router.add_route(method, "/v1/kv", empty_key)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/cluster", cluster)
    return app
