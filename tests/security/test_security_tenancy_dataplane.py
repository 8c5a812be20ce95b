"""Jaeger's multi-tenancy as kvtrace renders it (``spec.jaeger.tenancy``), against the real
Jaeger v1.76 (docs/security.md): what it does and what it does not.

The query side is gated: no tenant header → 401, an unknown tenant → 401. The write side is
not: a span sent over OTLP with the tenant header (what a collector setting the header per
consumer would send, even with ``include_metadata`` and the header kept through ``batch``) is
stored without a tenant. So the memory store (partitioned by tenant) answers every tenant with
nothing, and badger answers every tenant with every tenant's spans. Per-consumer tenant headers
set by the collector therefore cannot isolate tenants with this Jaeger; docs/security.md says
so. When an upgrade changes this, this test fails and tells. Jaeger's OTLP receiver serves TLS
as by default (a leaf of ``kvtrace.devstack.local_tls``); the sender verifies it."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from kvtrace.devstack.backends import Jaeger
from kvtrace.devstack.local_tls import LocalTLS, local_tls
from kvtrace.devstack.podrender import HOST_CA_OVERRIDES
from kvtrace.devstack.proc import urlopen_direct
from kvtrace_operator.render import render_jaeger_config
from kvtrace_operator.render.jaeger import BADGER_DIR

pytestmark = pytest.mark.dataplane

HEADER = "x-tenant"


class TenantJaeger(Jaeger):  # type: ignore[misc]
    """Ready on its health check alone: its query API now wants a tenant header."""

    def _ready(self) -> bool:
        return bool(super(Jaeger, self)._ready())


def tenancy_config(
    storage: str, badger_dir: Path, tls_dir: Path
) -> tuple[dict[str, Any], LocalTLS]:
    pipe = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "shared", "namespace": "kv-shared"},
        "spec": {
            "jaeger": {
                "storage": {"type": storage},
                "tenancy": {"enabled": True, "header": HEADER, "tenants": ["team-a", "team-b"]},
            }
        },
    }
    tls = local_tls(tls_dir, pipe)
    config: dict[str, Any] = tls.use_files(render_jaeger_config(pipe), tls.jaeger_leaf())
    # The tenant header kept as client metadata through the pipeline, the most a sender can do.
    config["receivers"]["otlp"]["protocols"]["http"]["include_metadata"] = True
    config["processors"]["batch"]["metadata_keys"] = [HEADER]
    if storage == "badger":
        badger = config["extensions"]["jaeger_storage"]["backends"]["traces"]["badger"]
        badger["directories"] = {
            key: path.replace(BADGER_DIR, str(badger_dir))
            for key, path in badger["directories"].items()
        }
    return config, tls


def query(jaeger: Any, tenant: str | None) -> tuple[int, str]:
    headers = {HEADER: tenant} if tenant else {}
    request = urllib.request.Request(f"{jaeger.query_url}/api/v3/services", headers=headers)
    try:
        with urlopen_direct(
            request, timeout=5, context=jaeger.ssl_context()
        ) as response:  # TLS query port
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def stored_spans(jaeger: Any) -> float:
    with urllib.request.urlopen(
        f"http://{jaeger.endpoint('metrics')}/metrics", timeout=5
    ) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("otelcol_exporter_sent_spans_total{")
        and "jaeger_storage_exporter" in line
    )


@pytest.mark.parametrize("storage", ["memory", "badger"])
def test_tenancy_gates_queries_but_spans_are_stored_without_tenant(
    storage: str, poll: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in HOST_CA_OVERRIDES:  # the exporter trusts its CA file, as in a pod
        monkeypatch.delenv(name, raising=False)
    config, tls = tenancy_config(storage, tmp_path / "badger", tmp_path / "tls")
    with TenantJaeger(config, ca_file=tls.ca_file, workdir=tmp_path / "jaeger") as jaeger:
        provider = TracerProvider(resource=Resource.create({"service.name": "team-a-kv"}))
        provider.add_span_processor(
            SimpleSpanProcessor(
                OTLPSpanExporter(
                    endpoint=f"https://{jaeger.endpoint('otlp/http')}/v1/traces",
                    headers={HEADER: "team-a"},
                    certificate_file=str(tls.ca_file),
                )
            )
        )
        with provider.get_tracer("tenancy-test").start_as_current_span("PUT"):
            pass
        provider.shutdown()
        poll(
            lambda: stored_spans(jaeger) >= 1,
            timeout=30,
            message="the span written to Jaeger's storage",
        )

        assert query(jaeger, None) == (401, "missing tenant header")
        assert query(jaeger, "team-c") == (401, "unknown tenant")
        answers = {tenant: query(jaeger, tenant) for tenant in ("team-a", "team-b")}
        assert all(status == 200 for status, _ in answers.values())
        if storage == "memory":  # stored under no tenant: nobody sees it, not even team-a
            assert all("team-a-kv" not in body for _, body in answers.values()), answers
        else:  # badger ignores the tenant: team-b sees team-a's span
            assert all("team-a-kv" in body for _, body in answers.values()), answers
