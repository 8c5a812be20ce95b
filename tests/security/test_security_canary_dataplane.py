"""The canary (kvtrace.canary, shared by `kvtrace doctor` and the operator's TraceDelivery
timer) against the real collector running the configuration the operator renders for
bearer auth and TLS, and the real Jaeger; each failure maps to its TraceDelivery reason
(render/canary.py): the right token and CA get through and the trace is in Jaeger; no token
is Rejected (401); another CA, or checking the certificate against the local address
instead of the Service name, is CollectorUnreachable; Jaeger stopped is NotFoundInJaeger."""

from __future__ import annotations

import datetime
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from test_security_telemetry_dataplane import (
    COLLECTOR_DNS,
    TOKEN_SECRET,
    local_collector_config,
    pipeline,
)

from kvtrace import canary
from kvtrace_operator import pki
from kvtrace_operator.render.canary import CanaryResult, decide
from kvtrace_operator.render.security import AUTH_DIR
from kvtrace_operator.render.tls import SERVING_DIR

pytestmark = pytest.mark.dataplane

SERVICE_URL = f"https://{COLLECTOR_DNS}:4318"


def certificates(tmp_path: Path) -> tuple[str, str]:
    """(the collector's CA, an unrelated CA), the collector's leaf written to SERVING_DIR's stand-in."""
    now = datetime.datetime.now(datetime.UTC)
    ca = pki.make_ca("canary-test-ca", now, datetime.timedelta(days=1))
    other = pki.make_ca("another-ca", now, datetime.timedelta(days=1))
    leaf = pki.issue(ca, "traces-collector", [COLLECTOR_DNS], now, datetime.timedelta(hours=1))
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "tls.crt").write_text(leaf.cert_pem)
    (serving / "tls.key").write_text(leaf.key_pem)
    return ca.cert_pem, other.cert_pem


def one_span(trace_id: str) -> dict[str, Any]:
    end = time.time_ns()
    return canary.canary_request(
        trace_id,
        secrets.token_hex(8),
        start_ns=end - 10**6,
        end_ns=end,
        service="kvtrace-canary-test",
        name="canary",
        attributes={},
    )


def result(address: str, **fields: Any) -> CanaryResult:
    return CanaryResult(
        trace_id="ab" * 16,
        collector=SERVICE_URL,
        jaeger="http://jaeger:16686",
        time="2026-01-01T00:00:00Z",
        **fields,
    )


def test_canary_through_auth_and_tls_and_each_failure(
    collector: Any, jaeger: Any, poll: Any, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(24)
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "token").write_text(token)
    ca_pem, other_ca_pem = certificates(tmp_path)
    pipe = pipeline(
        auth={"enabled": True, "tokenSecretRef": TOKEN_SECRET},
        tls={"enabled": True, "mode": "secret", "secretName": "collector-tls"},
    )
    backend = jaeger()
    col = collector(
        local_collector_config(
            pipe, backend, {AUTH_DIR: tmp_path / "auth", SERVING_DIR: tmp_path / "serving"}
        )
    )
    local = f"https://{col.endpoint('otlp/http')}"

    def send(trace_id: str, **kwargs: Any) -> tuple[int, str]:
        return canary.post(local, one_span(trace_id), timeout=5, **kwargs)

    # The right token and CA, the certificate checked against the Service name: delivered.
    trace_id = canary.new_ids()[0]
    status, _ = send(trace_id, token=token, ca_pem=ca_pem, server_hostname=COLLECTOR_DNS)
    assert status == 200
    poll(
        lambda: canary.in_jaeger(backend.query_url, trace_id),
        timeout=30,
        message="the canary in Jaeger",
    )
    assert (
        decide(result(local, http_status=200, found=True, waited_s=0.4), enabled=True)[1]
        == "Delivered"
    )

    # No token: the collector refuses it.
    status, body = send(canary.new_ids()[0], ca_pem=ca_pem, server_hostname=COLLECTOR_DNS)
    assert status == 401
    assert decide(result(local, http_status=status, http_body=body), enabled=True)[1] == "Rejected"

    # Another CA, or the certificate checked against the address connected to: not sent.
    for kwargs in ({"ca_pem": other_ca_pem, "server_hostname": COLLECTOR_DNS}, {"ca_pem": ca_pem}):
        with pytest.raises(canary.SEND_ERRORS) as refused:
            send(canary.new_ids()[0], token=token, **kwargs)
        why = canary.error_text(refused.value)
        assert "CERTIFICATE_VERIFY_FAILED" in why or "certificate verify failed" in why, why
        got = decide(result(local, send_error=why), enabled=True)
        assert (
            got[:2] == ("False", "CollectorUnreachable")
            and "certificate verify failed" in got[2].lower()
        )

    # Jaeger stopped: the collector still accepts, the lookup fails.
    query = backend.query_url
    backend.stop()
    lost = canary.new_ids()[0]
    assert send(lost, token=token, ca_pem=ca_pem, server_hostname=COLLECTOR_DNS)[0] == 200
    with pytest.raises(canary.LOOKUP_ERRORS) as down:
        canary.in_jaeger(query, lost, timeout=2)
    got = decide(
        result(
            local,
            http_status=200,
            found=False,
            bound_s=2,
            jaeger_error=canary.error_text(down.value),
        ),
        enabled=True,
    )
    assert got[:2] == ("False", "NotFoundInJaeger") and "last Jaeger query error" in got[2]
