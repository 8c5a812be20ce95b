"""A canary trace: one OTLP/HTTP (JSON) export sent through a collector, then looked up in
Jaeger by its trace id. Shared by ``kvtrace doctor`` (a one-off check) and the operator's
``TraceDelivery`` timer (a periodic one).

Standard library plus the stdlib-only Jaeger client; no kopf, no Kubernetes client, nothing
of the operator or of the inspection commands (an import-linter contract keeps it so).

The canary lasts longer than the pipeline's ``latencyThreshold`` (the caller chooses the
duration, see ``kvtrace_operator.render.canary``), so production tail sampling keeps it
through the ``slow`` policy whatever the ratio; it carries no ERROR status, so it never shows
up among real errors, and its own ``service.name`` keeps it out of every KV service's traces.
"""

from __future__ import annotations

import http.client
import json
import secrets
import ssl
import urllib.error
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kvtrace.shared.jaeger_client import JaegerClient, JaegerError, connection

DOCTOR_SERVICE = "kvtrace-doctor"
OPERATOR_SERVICE = "kvtrace-operator-canary"


def new_ids() -> tuple[str, str]:
    """A random (trace id, span id) in hex."""
    return secrets.token_hex(16), secrets.token_hex(8)


def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def canary_request(
    trace_id: str,
    span_id: str,
    *,
    start_ns: int,
    end_ns: int,
    service: str,
    name: str,
    attributes: Mapping[str, str],
) -> dict[str, Any]:
    """An ExportTraceServiceRequest (OTLP-JSON) with one root span ``name`` of ``service``."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", service)]},
                "scopeSpans": [
                    {
                        "scope": {"name": "kvtrace.canary"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": name,
                                "kind": 1,
                                "startTimeUnixNano": str(start_ns),
                                "endTimeUnixNano": str(end_ns),
                                "attributes": [_attr(k, v) for k, v in sorted(attributes.items())],
                                "status": {"code": 0},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def traces_url(base: str) -> str:
    """``http://host:4318`` → ``http://host:4318/v1/traces`` (a full path is kept)."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def post(
    url: str,
    request: Mapping[str, Any],
    *,
    timeout: float = 5.0,
    token: str | None = None,
    ca_pem: str | None = None,
    server_hostname: str | None = None,
) -> tuple[int, str]:
    """POST an OTLP-JSON request to ``url`` (``/v1/traces`` appended); (HTTP status, body).

    ``token``: sent as ``authorization: Bearer TOKEN``; ``ca_pem``: the CA that signed an
    https collector's certificate; ``server_hostname``: the name that certificate is checked
    against when ``url`` is an address the name was mapped to (defaults to the URL's host).
    Raises OSError when the collector cannot be reached, ssl.SSLError on a TLS failure."""
    parts = urlsplit(traces_url(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL of an OTLP/HTTP receiver, got {url!r}")
    conn, target = connection(
        traces_url(url), timeout=timeout, ca_pem=ca_pem, server_hostname=server_hostname
    )
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", target, body=json.dumps(request).encode(), headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def error_text(exc: BaseException) -> str:
    """A one-line reason for a failed send or lookup (a TLS failure keeps its verify message)."""
    reason = None if isinstance(exc, ssl.SSLError) else getattr(exc, "reason", None)
    return " ".join(str(reason or exc).split()) or type(exc).__name__


def in_jaeger(
    jaeger_url: str,
    trace_id: str,
    *,
    timeout: float = 3.0,
    credentials: str | None = None,
    token: str | None = None,
    ca_pem: str | None = None,
    server_hostname: str | None = None,
) -> bool:
    """Whether Jaeger (``/api/v3``) has the trace (``credentials``: USER:PASSWORD when its
    query API asks for HTTP Basic; ``token``: a bearer token for kvtrace's query proxy;
    ``ca_pem``/``server_hostname``: verification of an https query API, as for :func:`post`).
    Raises JaegerError, OSError (unreachable, TLS) or ValueError (not JSON)."""
    client = JaegerClient(
        jaeger_url,
        timeout=timeout,
        credentials=credentials,
        token=token,
        ca_pem=ca_pem,
        server_hostname=server_hostname,
    )
    return client.trace(trace_id) is not None


LOOKUP_ERRORS = (JaegerError, OSError, urllib.error.URLError, ValueError)
SEND_ERRORS = (OSError, urllib.error.URLError, http.client.HTTPException)
