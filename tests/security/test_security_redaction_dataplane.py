"""The default redaction patterns in the real collector (docs/security.md): a span carrying a bearer
token, an e-mail address, a card number and a password goes through the collector rendered for
a pipeline with default settings into the real Jaeger; none of them arrives, while kvtrace's
own attributes do, the raw key only as its hash. With ``defaultPatterns: false`` the same
e-mail address arrives: the defaults are what masks it. Default settings include bearer auth
and TLS on every hop (certificates of ``kvtrace.devstack.local_tls``)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kvtrace.devstack.local_tls import LocalTLS, local_tls
from kvtrace.devstack.otlp_token import LocalToken, local_token, use_token_file
from kvtrace.devstack.podrender import HOST_CA_OVERRIDES
from kvtrace.devstack.proc import urlopen_direct
from kvtrace_operator.render import render_collector_config, render_jaeger_config

pytestmark = pytest.mark.dataplane

TOKEN = "Bearer " + secrets.token_hex(16)
EMAIL = f"user-{secrets.token_hex(4)}@example.com"
CARD = "4111111111111111"
PASSWORD = "pw-" + secrets.token_hex(8)
RAW_KEY = "order-" + secrets.token_hex(6)
ADDRESS = "kv-1.kv-peers.store.svc.cluster.local:7071"


def pipeline(**redaction: Any) -> dict[str, Any]:
    # head mode: no tail sampling wait; everything else as rendered by default.
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store"},
        "spec": {"sampling": {"mode": "head", "ratio": 1}, "redaction": redaction},
    }


@pytest.fixture(autouse=True)
def no_host_ca_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter trusts the pipeline's CA file, as in a pod (no host CA bundle override)."""
    for name in HOST_CA_OVERRIDES:
        monkeypatch.delenv(name, raising=False)


def start(
    collector: Any, jaeger: Any, pipe: dict[str, Any], token: LocalToken, tmp_path: Path
) -> tuple[Any, Any, LocalTLS]:
    """The rendered Jaeger and collector; auth is on by default (the collector's token file is
    ``token``'s), so is TLS (each serves its local leaf). (collector, Jaeger, TLS)"""
    tls = local_tls(tmp_path / "tls", pipe)
    backend = jaeger(
        tls.use_files(render_jaeger_config(pipe), tls.jaeger_leaf()), ca_file=tls.ca_file
    )
    config = tls.use_files(
        use_token_file(render_collector_config(pipe), token.file), tls.edge_leaf()
    )
    config["exporters"]["otlp_grpc/jaeger"]["endpoint"] = backend.otlp_grpc
    return collector(config), backend, tls


def send(col: Any, service: str, token: LocalToken, tls: LocalTLS) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("redaction-test").start_as_current_span("kv.put") as span:
        span.set_attributes(
            {
                "http.request.header.authorization": TOKEN,
                "note": f"notify {EMAIL} about the order",
                "payment.card": CARD,
                "db.password": PASSWORD,
                "kvstore.key": RAW_KEY,
                "server.address": ADDRESS,
                "kvstore.consistency": "quorum",
                "kvstore.replicas.acked": 2,
                "error.detail": f"upstream said: {TOKEN}",
            }
        )
    exporter = OTLPSpanExporter(
        endpoint=f"https://{col.endpoint('otlp/http')}/v1/traces",
        headers=token.header,
        certificate_file=str(tls.ca_file),
        timeout=5,
    )
    try:
        assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
        provider.shutdown()


def stored(jaeger: Any, poll: Any, service: str) -> tuple[dict[str, Any], str]:
    """The span's attributes as Jaeger stores them, and the raw answer of the query API."""
    client = jaeger.client()
    [trace] = poll(lambda: client.find_traces(service), timeout=30, message=f"{service} in Jaeger")
    url = f"{jaeger.query_url}/api/v3/traces/{trace.trace_id}"
    with urlopen_direct(
        url, timeout=5, context=jaeger.ssl_context()
    ) as response:  # its TLS query port
        body = response.read().decode()
    return trace.spans[0].attributes, body


def test_default_patterns_mask_secrets_and_keep_kvtrace_attributes(
    collector: Any, jaeger: Any, poll: Any, tmp_path: Path
) -> None:
    token = local_token(tmp_path / "auth")
    col, backend, tls = start(collector, jaeger, pipeline(), token, tmp_path)
    service = f"redaction-{secrets.token_hex(3)}"
    send(col, service, token, tls)
    attributes, body = stored(backend, poll, service)
    for secret in (TOKEN, TOKEN.split()[1], EMAIL, CARD, PASSWORD, RAW_KEY):
        assert secret not in body, f"{secret!r} reached Jaeger: {json.dumps(attributes)}"
    assert attributes["server.address"] == ADDRESS
    assert (
        attributes["kvstore.consistency"] == "quorum" and attributes["kvstore.replicas.acked"] == 2
    )
    assert len(attributes["kvstore.key"]) >= 40  # hashed, not masked
    assert "****" in attributes["note"] and "notify" in attributes["note"]


def test_without_default_patterns_only_the_users_apply(
    collector: Any, jaeger: Any, poll: Any, tmp_path: Path
) -> None:
    token = local_token(tmp_path / "auth")
    col, backend, tls = start(
        collector,
        jaeger,
        pipeline(defaultPatterns=False, blockedValues=[r"\b4[0-9]{15}\b"]),
        token,
        tmp_path,
    )
    service = f"redaction-off-{secrets.token_hex(3)}"
    send(col, service, token, tls)
    attributes, body = stored(backend, poll, service)
    assert EMAIL in attributes["note"]  # the defaults are what masks it
    assert CARD not in body  # the user's own pattern still applies
    assert RAW_KEY not in body  # hashing is separate from redaction
