"""A small client for Jaeger's ``/api/v3`` query API (the legacy ``/api/traces`` is going away).

``/api/v3/traces`` answers with OTLP-JSON wrapped as ``{"result": {"resourceSpans": [...]}}``
(possibly several such chunks in one body, as the gRPC gateway streams them) and needs an
explicit time window; "no traces" is a 404. Spans come back decoded into :class:`Span`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import http.client
import json
import os
import socket
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclasses.dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, ...
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: str  # UNSET, OK, ERROR
    status_message: str = ""
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    links: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    scope: str = ""

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id


@dataclasses.dataclass
class Trace:
    trace_id: str
    spans: list[Span]

    def root(self) -> Span | None:
        roots = [s for s in self.spans if s.is_root]
        return min(roots, key=lambda s: s.start_ns) if roots else None

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]

    def children(self, span: Span) -> list[Span]:
        return [s for s in self.spans if s.parent_span_id == span.span_id]

    @property
    def services(self) -> set[str]:
        return {s.service for s in self.spans}


def _id(value: Any) -> str:
    """OTLP-JSON ids are hex; protobuf-JSON renders bytes as base64. Accept both."""
    if not value:
        return ""
    text = str(value)
    if len(text) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        return base64.b64decode(text).hex()
    except (binascii.Error, ValueError):
        return text


def any_value(value: dict[str, Any] | None) -> Any:
    """Decode an OTLP ``AnyValue``."""
    if not value:
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: any_value(item.get("value")) for item in items or []}


def _enum(value: Any, table: dict[int, str], prefix: str) -> str:
    if isinstance(value, int):
        return table.get(value, str(value))
    if isinstance(value, str):
        return value.removeprefix(prefix) if value.startswith(prefix) else value
    return table[0]


def decode_spans(traces_data: dict[str, Any]) -> list[Span]:
    """Flatten an OTLP-JSON ``TracesData`` into spans."""
    spans = []
    for rs in traces_data.get("resourceSpans") or []:
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name", ""))
        for ss in rs.get("scopeSpans") or []:
            scope = (ss.get("scope") or {}).get("name", "")
            for raw in ss.get("spans") or []:
                status = raw.get("status") or {}
                spans.append(
                    Span(
                        trace_id=_id(raw.get("traceId")),
                        span_id=_id(raw.get("spanId")),
                        parent_span_id=_id(raw.get("parentSpanId")),
                        name=raw.get("name", ""),
                        kind=_enum(raw.get("kind", 0), _KINDS, "SPAN_KIND_"),
                        service=service,
                        start_ns=int(raw.get("startTimeUnixNano", 0)),
                        end_ns=int(raw.get("endTimeUnixNano", 0)),
                        attributes=attributes(raw.get("attributes")),
                        resource=resource,
                        status_code=_enum(status.get("code", 0), _STATUS, "STATUS_CODE_"),
                        status_message=status.get("message", ""),
                        events=[
                            {
                                "name": e.get("name", ""),
                                "time_ns": int(e.get("timeUnixNano", 0)),
                                "attributes": attributes(e.get("attributes")),
                            }
                            for e in raw.get("events") or []
                        ],
                        links=[
                            {
                                "trace_id": _id(link.get("traceId")),
                                "span_id": _id(link.get("spanId")),
                                "attributes": attributes(link.get("attributes")),
                            }
                            for link in raw.get("links") or []
                        ],
                        scope=scope,
                    )
                )
    return spans


def _chunks(body: str) -> Iterator[dict[str, Any]]:
    """JSON objects in a body that may hold several concatenated or newline-separated ones."""
    decoder = json.JSONDecoder()
    index = 0
    while True:
        while index < len(body) and body[index] in " \t\r\n":
            index += 1
        if index >= len(body):
            return
        obj, index = decoder.raw_decode(body, index)
        yield obj


def group_traces(spans: list[Span]) -> list[Trace]:
    by_id: dict[str, list[Span]] = {}
    for span in spans:
        by_id.setdefault(span.trace_id, []).append(span)
    return [
        Trace(trace_id, sorted(items, key=lambda s: s.start_ns))
        for trace_id, items in by_id.items()
    ]


def _rfc3339(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JaegerError(RuntimeError):
    pass


# USER:PASSWORD for a Jaeger whose query API asks for HTTP Basic (spec.jaeger.query.auth basic).
CREDENTIALS_ENV = "KVTRACE_JAEGER_CREDENTIALS"
# A bearer token for a query API behind kvtrace's query proxy (spec.jaeger.query.auth bearer|oidc).
TOKEN_ENV = "KVTRACE_JAEGER_TOKEN"
# The CA bundle (PEM file) of an https query API, and the name its certificate is checked for
# when the URL's host is another one (a port-forward to localhost, a local address).
CA_FILE_ENV = "KVTRACE_JAEGER_CA_FILE"
SERVER_NAME_ENV = "KVTRACE_JAEGER_SERVER_NAME"


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``connect_to`` (e.g. a development endpoint-map address or a port-forward)
    while verifying the certificate against ``server_hostname`` (the Service name it is for)."""

    def __init__(
        self,
        connect_to: tuple[str, int],
        server_hostname: str,
        *,
        context: ssl.SSLContext,
        timeout: float,
    ) -> None:
        super().__init__(connect_to[0], connect_to[1], context=context, timeout=timeout)
        self._connect_to = connect_to
        self._server_hostname = server_hostname
        self._ssl_context = context

    def connect(self) -> None:
        sock = socket.create_connection(self._connect_to, self.timeout)
        self.sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_hostname)


def connection(
    url: str, *, timeout: float, ca_pem: str | None = None, server_hostname: str | None = None
) -> tuple[http.client.HTTPConnection, str]:
    """A connection for ``url`` (https verified with ``ca_pem``, else the system's CAs, for
    ``server_hostname``, else the URL's host) and the request target (path and query)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if parts.scheme == "http":
        return http.client.HTTPConnection(parts.hostname, port, timeout=timeout), target
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    return PinnedHTTPSConnection(
        (parts.hostname, port), server_hostname or parts.hostname, context=context, timeout=timeout
    ), target


def _read_ca(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise JaegerError(
            f"cannot read the Jaeger CA file {path} (${CA_FILE_ENV}): {exc.strerror}"
        ) from None


class JaegerClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        credentials: str | None = None,
        token: str | None = None,
        ca_pem: str | None = None,
        server_hostname: str | None = None,
    ) -> None:
        """``credentials``: ``USER:PASSWORD`` sent as HTTP Basic; ``token``: sent as
        ``Authorization: Bearer`` (when neither is given: ``$KVTRACE_JAEGER_CREDENTIALS`` and
        ``$KVTRACE_JAEGER_TOKEN``; a token goes first); ``ca_pem``:
        the CA of an https query API (default: the file ``$KVTRACE_JAEGER_CA_FILE``, else the system's);
        ``server_hostname``: the name its certificate is for (default: ``$KVTRACE_JAEGER_SERVER_NAME``,
        else the URL's host)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        if credentials is None and token is None:  # the environment, unless the caller chose
            credentials, token = os.environ.get(CREDENTIALS_ENV), os.environ.get(TOKEN_ENV)
        self.credentials, self.token = credentials, token
        self.ca_pem = ca_pem if ca_pem is not None else _read_ca(os.environ.get(CA_FILE_ENV))
        self.server_hostname = server_hostname or os.environ.get(SERVER_NAME_ENV) or None

    def _headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.credentials:
            return {
                "Authorization": "Basic " + base64.b64encode(self.credentials.encode()).decode()
            }
        return {}

    def _refused(self, url: str, challenge: str) -> JaegerError:
        if challenge.lower().startswith("bearer"):
            reason = challenge.partition('error_description="')[2].partition('"')[0]
            given = (
                f"was refused ({reason or 'invalid token'})"
                if self.token
                else f"is needed (${TOKEN_ENV})"
            )
            return JaegerError(
                f"GET {url}: 401: Jaeger's query API asks for a bearer token and the token {given}"
            )
        given = "were refused" if self.credentials else f"are needed (${CREDENTIALS_ENV})"
        return JaegerError(
            f"GET {url}: 401: Jaeger's query API asks for HTTP Basic and the credentials {given}"
        )

    def _get(self, path: str, params: dict[str, Any] | None = None) -> str | None:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        conn, target = connection(
            url, timeout=self.timeout, ca_pem=self.ca_pem, server_hostname=self.server_hostname
        )
        try:
            conn.request("GET", target, headers=self._headers())
            response = conn.getresponse()
            body = response.read().decode(errors="replace")
        except http.client.HTTPException as exc:
            raise JaegerError(f"GET {url}: {exc!r}") from None
        finally:
            conn.close()
        if response.status == 404:
            return None
        if response.status == 401:
            raise self._refused(url, response.getheader("WWW-Authenticate") or "")
        if response.status != 200:
            raise JaegerError(f"GET {url}: {response.status} {body[:500]}")
        return body

    def _spans(self, body: str | None) -> list[Span]:
        spans: list[Span] = []
        for chunk in _chunks(body or ""):
            if "error" in chunk and "result" not in chunk:
                raise JaegerError(str(chunk["error"]))
            spans.extend(decode_spans(chunk.get("result", chunk)))
        return spans

    def services(self) -> list[str]:
        body = self._get("/api/v3/services")
        return sorted(json.loads(body).get("services") or []) if body else []

    def operations(self, service: str, span_kind: str | None = None) -> list[str]:
        body = self._get("/api/v3/operations", {"service": service, "span_kind": span_kind})
        return (
            sorted(op["name"] for op in (json.loads(body).get("operations") or [])) if body else []
        )

    def find_traces(
        self,
        service: str,
        *,
        operation: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        lookback: dt.timedelta = dt.timedelta(hours=1),
        limit: int = 100,
        min_duration: str | None = None,
    ) -> list[Trace]:
        """Up to ``limit`` traces of ``service`` in ``[start, end]`` (default: the last ``lookback``)."""
        now = dt.datetime.now(dt.UTC)
        end = end or now + dt.timedelta(minutes=1)
        start = start or end - lookback - dt.timedelta(minutes=1)
        body = self._get(
            "/api/v3/traces",
            {
                "query.service_name": service,
                "query.operation_name": operation,
                "query.start_time_min": _rfc3339(start),
                "query.start_time_max": _rfc3339(end),
                "query.num_traces": limit,
                "query.duration_min": min_duration,
            },
        )
        return group_traces(self._spans(body))

    def trace(self, trace_id: str) -> Trace | None:
        """One trace by its hex id, or None when Jaeger does not have it."""
        spans = self._spans(self._get(f"/api/v3/traces/{trace_id}"))
        return Trace(trace_id.lower(), sorted(spans, key=lambda s: s.start_ns)) if spans else None

    def service_metrics(
        self,
        metric: str,
        service: str,
        *,
        lookback: dt.timedelta = dt.timedelta(minutes=15),
        step: dt.timedelta = dt.timedelta(seconds=5),
        rate_per: dt.timedelta = dt.timedelta(minutes=10),
        span_kind: str = "server",
        group_by_operation: bool = True,
    ) -> list[dict[str, Any]]:
        """What the Monitor tab (SPM) shows: ``metric`` ``calls`` (requests/s), ``errors`` (error
        ratio) or ``latencies`` (needs ``quantile``; not offered here) of ``service`` per
        operation, read by Jaeger from its metrics backend (``/api/metrics/...``): one entry
        per series, ``{"labels": {...}, "points": [float, ...]}`` (NaN points left out).
        ``rate_per`` is the window of each rate (Jaeger's PromQL ``rate(...[ratePer])``; the
        UI's 10 minutes): it must hold two samples of the span metrics, which the collector
        pushes every 15 s."""
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        body = self._get(
            f"/api/metrics/{metric}",
            {
                "service": service,
                "endTs": now_ms,
                "lookback": int(lookback.total_seconds() * 1000),
                "step": int(step.total_seconds() * 1000),
                "ratePer": int(rate_per.total_seconds() * 1000),
                "spanKind": span_kind,
                "groupByOperation": "true" if group_by_operation else None,
            },
        )
        series = []
        for entry in (json.loads(body).get("metrics") or []) if body else []:
            labels = {label["name"]: label["value"] for label in entry.get("labels") or []}
            points = [
                float(p["gaugeValue"]["doubleValue"])
                for p in entry.get("metricPoints") or []
                if "doubleValue" in (p.get("gaugeValue") or {})
            ]
            series.append({"labels": labels, "points": [v for v in points if v == v]})
        return series

    def dependencies(
        self, lookback: dt.timedelta = dt.timedelta(hours=1)
    ) -> list[tuple[str, str, int]]:
        """The System Architecture view's edges: (parent service, child service, calls)."""
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        body = self._get(
            "/api/dependencies", {"endTs": now_ms, "lookback": int(lookback.total_seconds() * 1000)}
        )
        data = (json.loads(body).get("data") or []) if body else []
        return sorted((str(d["parent"]), str(d["child"]), int(d.get("callCount", 0))) for d in data)
