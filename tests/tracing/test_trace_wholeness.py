"""One client operation is one whole trace in Jaeger, and no key or value ever reaches it.

The chain is real: three `kvtrace node serve` processes under `opentelemetry-instrument` with
the environment `otel_environment` renders for pods orders-0..2, the collector running the
`render_collector_config` of a production TracingPipeline, and Jaeger v2 running
`render_jaeger_config`; only endpoints and ports are rewritten for loopback
(`tracing_stack.loopback_config` and `tracing_stack.pod_env` list exactly what).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.error
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from tracing_stack import (
    CLUSTER,
    GET_OP,
    PUT_OP,
    SPANS_PER_WRITE,
    Op,
    Stack,
    flush,
    run_ops,
    traceparent,
    wait_for_traces,
)

from kvtrace.devstack.proc import urlopen_direct
from kvtrace.devstack.pytest_plugin import poll
from kvtrace.shared.jaeger_client import Span, Trace

pytestmark = pytest.mark.dataplane

# Production sampling with ratio 1: the tail sampler keeps every trace, after its decision
# wait (8s; the rendered environment then exports every 2s, so all spans of a trace, from
# every node, reach the collector before it decides).
PRODUCTION_ALL = {"sampling": {"mode": "production", "ratio": 1.0, "decisionWait": "8s"}}
WAIT = 60  # seconds: export delay (2s) + decision wait (8s) + margin for a loaded machine


def members_by_ip(stack: Stack) -> dict[str, str]:
    return {n.ip: n.pod for n in stack.nodes}


def check_resource(span: Span) -> str:
    """Service name and the resource attributes the rendered environment promises; the member."""
    member = span.resource["kvstore.member.id"]
    assert span.service == CLUSTER
    assert span.resource["kvtrace.cluster"] == CLUSTER
    assert span.resource["k8s.namespace.name"] == "shop"
    assert span.resource["k8s.pod.name"] == member == span.resource["service.instance.id"]
    assert span.resource["k8s.node.name"] == f"kwok-node-{member.rsplit('-', 1)[1]}"
    return str(member)


def check_whole(
    trace: Trace, stack: Stack, coordinator: str, operation: str, replicas: int
) -> set[str]:
    """The coordinator's SERVER span is the root; it is the parent of one span per peer call:
    the SERVER span of the replica called, on another member, with no children (docs/design.md
    section 4). Returns the members seen."""
    by_ip = members_by_ip(stack)
    roots = [s for s in trace.spans if s.is_root]
    assert len(roots) == 1, [(s.name, s.parent_span_id) for s in trace.spans]
    root = roots[0]
    assert root.kind == "SERVER" and check_resource(root) == coordinator
    assert root.attributes["kvstore.operation"] == root.attributes["db.operation.name"] == operation
    assert root.attributes["kvstore.consistency"] == "quorum"
    assert root.attributes["kvstore.replicas.required"] == 2
    assert root.attributes["kvstore.replicas.acked"] >= 2
    assert root.status_code != "ERROR"
    calls = trace.children(root)
    assert len(calls) == replicas and {c.kind for c in calls} == {"SERVER"}
    members = {coordinator}
    for server in calls:
        assert trace.children(server) == []
        assert server.attributes["kvstore.operation"] == (
            "replicate" if operation == "write" else "read"
        )
        assert server.attributes["kvstore.key.hash"] == root.attributes["kvstore.key.hash"]
        member = check_resource(server)
        assert member != coordinator and member in by_ip.values()
        members.add(member)
    assert len(members) == 1 + replicas, "each call went to another replica"
    assert len(trace.spans) == 1 + replicas, "no span outside the tree"
    assert len({s.span_id for s in trace.spans}) == len(trace.spans)
    return members


def test_a_quorum_write_and_a_quorum_read_are_each_one_whole_trace(
    trace_stack: Callable[..., Stack],
) -> None:
    stack = trace_stack(PRODUCTION_ALL)
    a, b, _ = stack.nodes
    client = stack.jaeger.client
    (write,) = run_ops([Op(a.url, "PUT", "whole/one", b"value-1")])
    assert write.status == 204

    def write_trace() -> Trace | None:
        for t in client.find_traces(CLUSTER, operation=PUT_OP):
            root = t.root()
            if (
                root
                and root.attributes.get("kvstore.key.hash") == write.key_hash
                and len(t.spans) >= SPANS_PER_WRITE
            ):
                return t
        return None

    trace = poll(write_trace, timeout=WAIT, interval=0.5, message="the write's spans in Jaeger")
    # every replica applied the write (their SERVER spans ended): the read cannot be stale now.
    # It continues a sampled traceparent from the test, which only lets us find it by id.
    read_id, read_headers = traceparent()
    (read,) = run_ops([Op(b.url, "GET", "whole/one", headers=read_headers)])
    assert read.status == 200
    wait_for_traces(client, [read_id], timeout=WAIT)
    flush(stack, "fail/", timeout=WAIT)
    # the markers are in: everything the nodes ended before them has been decided and exported
    trace, read_trace = client.trace(trace.trace_id), client.trace(read_id)
    assert trace is not None and read_trace is not None
    assert check_whole(trace, stack, "orders-0", "write", replicas=2) == {
        "orders-0",
        "orders-1",
        "orders-2",
    }

    # the read: the node's SERVER span is the root of what the nodes sent (its parent is the
    # test's span, which Jaeger does not have); the local replica answers in-process, so QUORUM
    # needs one peer read
    remote_parent = {s.parent_span_id for s in read_trace.spans} - {
        s.span_id for s in read_trace.spans
    }
    assert len(remote_parent) == 1
    for s in read_trace.spans:
        if s.parent_span_id in remote_parent:
            s.parent_span_id = ""
    root = read_trace.root()
    assert root is not None and root.name == GET_OP
    members = check_whole(read_trace, stack, "orders-1", "read", replicas=1)
    assert len(members) == 2 and "orders-1" in members


def raw_jaeger(stack: Stack, path: str, params: dict[str, Any] | None = None) -> str:
    url = (
        stack.jaeger.backend.query_url
        + path
        + ("?" + urllib.parse.urlencode(params) if params else "")
    )
    try:
        with urlopen_direct(
            url, timeout=10, context=stack.jaeger.backend.ssl_context()
        ) as resp:  # its TLS port
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ""
        raise


def leak_forms(secret: bytes) -> set[str]:
    """The secret as Jaeger could render it: raw, percent-encoded, hex, and base64 at each of
    the three byte alignments (the middle characters, which depend on the secret alone)."""
    forms = {secret.decode(), urllib.parse.quote(secret.decode(), safe=""), secret.hex()}
    forms |= {base64.b64encode(b"\0" * shift + secret).decode()[4:-4] for shift in range(3)}
    return {f for f in forms if len(f) >= 8}


def test_canary_keys_and_values_never_reach_jaeger(trace_stack: Callable[..., Stack]) -> None:
    """Production pipeline. The nodes are deliberately misconfigured with
    ``KVNODE_TRACE_RAW_KEYS=true`` (the operator sets it only for a development pipeline that
    does not hash keys): even then the rendered collector's ``attributes/hash`` replaces the raw
    ``kvstore.key``, so Jaeger holds only hashes."""
    stack = trace_stack(
        PRODUCTION_ALL, faults="error:canary-fail-", extra_env={"KVNODE_TRACE_RAW_KEYS": "true"}
    )
    a, b, c = stack.nodes
    key, value = "canary-key-7f3e9a1c", b"canary-value-5d2b8e04"
    fail_key = "canary-fail-0c4d6f2a"
    ops = run_ops([Op(a.url, "PUT", key, value)], concurrency=1)
    ops += run_ops(
        [
            Op(b.url, "GET", key),
            Op(c.url, "GET", key + "-missing"),
            Op(a.url, "PUT", fail_key, value),
        ],
        concurrency=1,
    )
    ops += run_ops([Op(c.url, "DELETE", key)], concurrency=1)
    assert [op.status for op in ops] == [204, 200, 404, 500, 204]
    client = stack.jaeger.client
    flush(stack, "canary-fail-marker", timeout=WAIT)

    hashes = {op.key_hash for op in ops}

    def all_ops_in() -> list[Trace] | None:
        traces = client.find_traces(CLUSTER, limit=100)
        seen = {str(s.attributes.get("kvstore.key.hash")) for t in traces for s in t.spans}
        return traces if hashes <= seen else None

    traces = poll(all_ops_in, timeout=WAIT, interval=0.5, message="the five operations' traces")
    raw = [
        raw_jaeger(stack, "/api/v3/services"),
        raw_jaeger(stack, "/api/v3/operations", {"service": CLUSTER}),
    ]
    raw += [raw_jaeger(stack, f"/api/v3/traces/{t.trace_id}") for t in traces]
    now = dt.datetime.now(dt.UTC)
    raw.append(
        raw_jaeger(
            stack,
            "/api/v3/traces",
            {
                "query.service_name": CLUSTER,
                "query.num_traces": 100,
                "query.start_time_min": (now - dt.timedelta(hours=1)).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                "query.start_time_max": (now + dt.timedelta(hours=1)).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            },
        )
    )
    body = "\n".join(raw)
    assert all(json.loads(chunk) for chunk in raw[2:-1])
    for secret in (
        key.encode(),
        value,
        fail_key.encode(),
        b"canary-key",
        b"canary-value",
        b"canary-fail",
    ):
        for form in leak_forms(secret):
            assert form not in body, f"{form!r} (from {secret!r}) leaked into Jaeger"
    for h in hashes:
        assert f'"{h}"' in body, f"kvstore.key.hash {h} missing"
    # the misconfigured nodes did send kvstore.key: the collector hashed it on the way
    hashed = {
        s.attributes["kvstore.key"]
        for t in traces
        for s in t.spans
        if "kvstore.key" in s.attributes
    }
    assert hashed and all(len(v) >= 40 and "canary" not in v for v in hashed), hashed
