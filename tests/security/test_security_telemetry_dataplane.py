"""Authenticated and encrypted telemetry through the real collector into the real Jaeger
(docs/security.md): the collector runs the configuration the operator renders for
``spec.security.auth`` / ``spec.security.tls``; the sender is the OpenTelemetry SDK's OTLP/HTTP
exporter configured only by the environment the operator renders for a KV pod (Secret
references resolved as the kubelet would).

- auth: no token → HTTP 401, a wrong token → 401, each consumer's token in the token set (as
  the operator writes it, a labelled line per consumer) → the span is in Jaeger; with TLS on
  as by default (mode managed: certificates of ``kvtrace.devstack.local_tls``, every hop
  verified);
- TLS mode secret: the right CA → the span is in Jaeger; plaintext, a client trusting another
  CA, and a server certificate that has expired are all refused.

The mode secret certificates are made per test with the ``openssl`` command line (ECDSA P-256,
fast)."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kvtrace.devstack.backends import send_probe_trace
from kvtrace.devstack.local_tls import LocalTLS, local_tls
from kvtrace.devstack.otlp_token import LocalToken, local_token
from kvtrace_operator.render import (
    consumer_tokens,
    otel_environment,
    render_collector_config,
    render_jaeger_config,
)
from kvtrace_operator.render.security import AUTH_DIR, CLIENT_CA_DIR, SERVING_DIR

pytestmark = pytest.mark.dataplane

NS = "store"
COLLECTOR_DNS = f"traces-collector.{NS}.svc.cluster.local"
TOKEN_SECRET = {"name": "otlp-token", "key": "token"}


def pipeline(**security: Any) -> dict[str, Any]:
    # head mode: no tail sampling, so an accepted span reaches Jaeger at once.
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": NS},
        "spec": {"sampling": {"mode": "head", "ratio": 1}, "security": security},
    }


def kvcluster() -> dict[str, Any]:
    name = f"kv{secrets.token_hex(4)}"  # also the service name: unique per test
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"tracing": {"pipelineRef": {"name": "traces"}}},
    }


def local_collector_config(
    pipe: dict[str, Any], jaeger: Any, files: dict[str, Path]
) -> dict[str, Any]:
    """The rendered config with the in-pod mount paths pointed at ``files`` and the Jaeger
    exporter at the test's Jaeger; nothing else changes."""
    text = yaml.safe_dump(render_collector_config(pipe))
    for mount, local in files.items():
        text = text.replace(mount, str(local))
    config = yaml.safe_load(text)
    config["exporters"]["otlp_grpc/jaeger"]["endpoint"] = jaeger.otlp_grpc
    return config


def managed_tls_stack(
    collector: Any, jaeger: Any, pipe: dict[str, Any], tmp_path: Path, files: dict[str, Path]
) -> tuple[Any, Any, LocalTLS]:
    """Jaeger and the edge collector rendered for ``pipe`` with the default TLS (mode managed):
    each serves its local leaf, the collector verifies Jaeger's Service name. (edge, Jaeger, TLS)"""
    tls = local_tls(tmp_path / "tls", pipe)
    backend = jaeger(
        tls.use_files(render_jaeger_config(pipe), tls.jaeger_leaf()), ca_file=tls.ca_file
    )
    edge = collector(tls.use_files(local_collector_config(pipe, backend, files), tls.edge_leaf()))
    return edge, backend, tls


def pod_env(
    cluster: dict[str, Any],
    pipe: dict[str, Any],
    secret_data: dict[tuple[str, str], str],
    endpoint: str,
    files: dict[str, Path],
) -> dict[str, str]:
    """What the kubelet would give the KV pod: fieldRefs and secretKeyRefs resolved, ``$(VAR)``
    expanded; the collector's Service name → ``endpoint`` (scheme kept), mount paths → ``files``."""
    fields = {"metadata.name": f"{cluster['metadata']['name']}-0", "spec.nodeName": "node-0"}
    env: dict[str, str] = {}
    for item in otel_environment(cluster, pipe):
        source = item.get("valueFrom")
        if source and "fieldRef" in source:
            value = fields[source["fieldRef"]["fieldPath"]]
        elif source:
            ref = source["secretKeyRef"]
            value = secret_data[(ref["name"], ref["key"])]
        else:
            value = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], item["value"]
            )
        env[item["name"]] = value
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = env["OTEL_EXPORTER_OTLP_ENDPOINT"].replace(
        f"{COLLECTOR_DNS}:4318", endpoint
    )
    for mount, local in files.items():
        env = {key: value.replace(mount, str(local)) for key, value in env.items()}
    return env


def use_pod_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's OTEL_* variables become exactly the pod's (exporters read them at init)."""
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("OTEL_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
    # requests lets these (set on this host, not in the KV image) override the exporter's CA.
    for key in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(key, raising=False)


def send_span(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> SpanExportResult:
    """One span exported by the SDK's OTLP/HTTP exporter, configured only by ``env``."""
    use_pod_env(env, monkeypatch)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("security-test").start_as_current_span("kv.put"):
        pass
    exporter = OTLPSpanExporter()
    try:
        return exporter.export(memory.get_finished_spans())
    finally:
        exporter.shutdown()
        provider.shutdown()


def arrives(jaeger: Any, poll: Any, service: str) -> None:
    client = jaeger.client()
    poll(lambda: client.find_traces(service), timeout=30, message=f"a trace of {service} in Jaeger")


def post_traces(
    address: str, headers: dict[str, str], context: ssl.SSLContext | None = None
) -> int:
    """POST an empty OTLP/HTTP export request; the HTTP status."""
    host, port = address.rsplit(":", 1)
    conn = (
        http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
        if context
        else http.client.HTTPConnection(host, int(port), timeout=5)
    )
    try:
        conn.request(
            "POST",
            "/v1/traces",
            body=b"",
            headers={"Content-Type": "application/x-protobuf", **headers},
        )
        return conn.getresponse().status
    finally:
        conn.close()


# ---- authentication -------------------------------------------------------------------------


def test_bearer_token_is_required_and_the_right_one_gets_through(
    collector: Any, jaeger: Any, poll: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, other = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    (tmp_path / "auth").mkdir()
    cluster = kvcluster()
    # The token set as the operator writes it: one "TOKEN LABEL" line per consumer.
    (tmp_path / "auth" / "token").write_text(
        consumer_tokens.compose(
            [(other, "pipeline"), (token, f"KVCluster/{cluster['metadata']['name']}")], "unused"
        )
    )
    files = {AUTH_DIR: tmp_path / "auth"}
    pipe = pipeline(auth={"enabled": True, "tokenSecretRef": TOKEN_SECRET})
    col, backend, tls = managed_tls_stack(collector, jaeger, pipe, tmp_path, files)
    files[CLIENT_CA_DIR] = tls.ca_file.parent
    address = col.endpoint("otlp/http")
    verified = ssl.create_default_context(cafile=str(tls.ca_file))

    assert post_traces(address, {}, verified) == 401
    assert (
        post_traces(address, {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}, verified)
        == 401
    )
    assert post_traces(address, {"Authorization": f"Bearer {token}"}, verified) == 200
    assert (
        post_traces(address, {"Authorization": f"Bearer {other}"}, verified) == 200
    )  # every consumer's token
    # The label after a token is a comment to the extension, never a token.
    assert post_traces(address, {"Authorization": "Bearer pipeline"}, verified) == 401
    # The edge counts what it refused in its own metrics (level detailed with auth).
    assert http_requests(col, "401") == 3 and http_requests(col, "200") == 2

    own = (consumer_tokens.client_token_secret(cluster["metadata"]["name"]), "token")
    right = pod_env(cluster, pipe, {own: token}, address, files)
    assert right["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"https://{address}"  # TLS on by default
    assert token not in yaml.safe_dump(otel_environment(cluster, pipe))  # only by reference
    assert send_span(right, monkeypatch) == SpanExportResult.SUCCESS
    arrives(backend, poll, cluster["metadata"]["name"])

    intruder = kvcluster()
    wrong = pod_env(
        intruder,
        pipe,
        {
            (
                consumer_tokens.client_token_secret(intruder["metadata"]["name"]),
                "token",
            ): "not-the-token"
        },
        address,
        files,
    )
    assert send_span(wrong, monkeypatch) == SpanExportResult.FAILURE
    services = backend.client().services()
    assert intruder["metadata"]["name"] not in services and cluster["metadata"]["name"] in services
    assert http_requests(col, "401") == 4


def test_grpc_without_token_is_unauthenticated_and_counted(
    collector: Any, jaeger: Any, poll: Any, tmp_path: Path
) -> None:
    """A gRPC sender without the token (another collector's OTLP exporter) is refused with
    Unauthenticated, counted by the edge; with the token its span arrives."""
    token = secrets.token_urlsafe(24)
    (tmp_path / "auth").mkdir()
    (tmp_path / "auth" / "token").write_text(token)
    pipe = pipeline(auth={"enabled": True, "tokenSecretRef": TOKEN_SECRET})
    edge, backend, tls = managed_tls_stack(
        collector, jaeger, pipe, tmp_path, {AUTH_DIR: tmp_path / "auth"}
    )
    anonymous = collector(grpc_sender(edge.otlp_grpc, {}, tls.ca_file), name="anonymous")
    send_probe_trace(anonymous.otlp_http, "anonymous-sender")
    poll(
        lambda: grpc_calls(edge, "UNAUTHENTICATED") >= 1,
        timeout=30,
        message="the refused gRPC export counted as UNAUTHENTICATED",
    )
    assert grpc_calls(edge, "OK") == 0
    holder = collector(
        grpc_sender(edge.otlp_grpc, {"authorization": f"Bearer {token}"}, tls.ca_file),
        name="holder",
    )
    send_probe_trace(holder.otlp_http, "token-holder")
    arrives(backend, poll, "token-holder")
    assert grpc_calls(edge, "OK") >= 1
    assert "anonymous-sender" not in backend.client().services()


def grpc_sender(endpoint: str, headers: dict[str, str], ca_file: Path) -> dict[str, Any]:
    """A collector that forwards what it receives over OTLP/HTTP to ``endpoint`` over gRPC
    (TLS, trusting ``ca_file``), with ``headers``, without retries (a refusal is final)."""
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {
            "otlp_grpc": {
                "endpoint": endpoint,
                "tls": {"ca_file": str(ca_file)},
                "headers": headers,
                "retry_on_failure": {"enabled": False},
                "sending_queue": {"enabled": False},
            }
        },
        "extensions": {"health_check": {"endpoint": "127.0.0.1:0"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]}},
        },
    }


def own_metric(col: Any, name: str, label: str, value: str) -> float:
    """Sum of the collector's own metric ``name`` over the series with ``label="value"``."""
    with urllib.request.urlopen(f"http://{col.endpoint('metrics')}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'{label}="{value}"' in line
    )


def http_requests(col: Any, status: str) -> float:
    return own_metric(
        col, "http_server_request_duration_seconds_count", "http_response_status_code", status
    )


def grpc_calls(col: Any, status: str) -> float:
    return own_metric(
        col, "rpc_server_call_duration_seconds_count", "rpc_response_status_code", status
    )


# ---- TLS ------------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    assert exe, "the openssl command line is needed to make test certificates"
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_ca(directory: Path) -> Path:
    directory.mkdir(parents=True)
    openssl(
        "req",
        "-x509",
        *KEY,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        f"/CN=kvtrace-test-ca-{directory.name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    return directory


def make_serving_secret(ca: Path, directory: Path, *, expired: bool = False) -> Path:
    """What a cert-manager Certificate writes: tls.crt, tls.key and ca.crt."""
    directory.mkdir(parents=True)
    openssl(
        "req",
        "-new",
        *KEY,
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=traces-collector",
        cwd=directory,
    )
    sans = f"DNS:traces-collector.{NS}.svc,DNS:{COLLECTOR_DNS},IP:127.0.0.1"
    (directory / "ext").write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        str(ca / "ca.crt"),
        "-CAkey",
        str(ca / "ca.key"),
        "-CAcreateserial",
        "-days",
        "-1" if expired else "2",
        "-extfile",
        "ext",
        "-out",
        "tls.crt",
        cwd=directory,
    )
    shutil.copy(ca / "ca.crt", directory / "ca.crt")
    return directory


def tls_collector(
    collector: Any, backend: Any, secret: Path, token: LocalToken
) -> tuple[Any, dict[str, Path]]:
    """The edge with the TLS ``secret``; auth is on by default: it reads ``token``."""
    files = {SERVING_DIR: secret, AUTH_DIR: token.file.parent}
    pipe = pipeline(tls={"enabled": True, "secretName": "collector-tls"})
    return collector(local_collector_config(pipe, backend, files)), files


def kv_files(secret: Path) -> dict[str, Path]:
    return {CLIENT_CA_DIR: secret}


def test_tls_with_the_right_ca_arrives_and_plaintext_or_another_ca_is_refused(
    collector: Any, jaeger: Any, poll: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = make_serving_secret(make_ca(tmp_path / "ca"), tmp_path / "secret")
    backend = jaeger()
    token = local_token(tmp_path / "auth")
    col, _ = tls_collector(collector, backend, secret, token)
    address = col.endpoint("otlp/http")
    pipe = pipeline(tls={"enabled": True, "secretName": "collector-tls"})

    cluster = kvcluster()
    env = pod_env(cluster, pipe, token.secrets(pipe), address, kv_files(secret))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"https://{address}"
    assert (
        Path(env["OTEL_EXPORTER_OTLP_CERTIFICATE"]).read_bytes() == (secret / "ca.crt").read_bytes()
    )
    assert send_span(env, monkeypatch) == SpanExportResult.SUCCESS
    arrives(backend, poll, cluster["metadata"]["name"])

    # Plaintext to the TLS port: Go's TLS server answers 400 and takes nothing.
    assert post_traces(address, {}) == 400
    # A client trusting another CA refuses the collector's certificate.
    other = ssl.create_default_context(cafile=str(make_ca(tmp_path / "other-ca") / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        post_traces(address, {}, context=other)
    stranger = kvcluster()
    wrong_env = pod_env(
        stranger, pipe, token.secrets(pipe), address, kv_files(tmp_path / "other-ca")
    )
    assert send_span(wrong_env, monkeypatch) == SpanExportResult.FAILURE
    assert stranger["metadata"]["name"] not in backend.client().services()


def test_an_expired_collector_certificate_is_refused(
    collector: Any, jaeger: Any, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "ca")
    secret = make_serving_secret(ca, tmp_path / "secret", expired=True)
    col, _ = tls_collector(collector, jaeger(), secret, local_token(tmp_path / "auth"))
    trusting = ssl.create_default_context(cafile=str(ca / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        post_traces(col.endpoint("otlp/http"), {}, context=trusting)


@pytest.mark.parametrize("replicas", [1, 2], ids=["one-tier", "two-tier"])
def test_secured_configs_pass_otelcol_validate(replicas: int, tmp_path: Path) -> None:
    """Every receiver (Zipkin and Jaeger too) with auth and TLS, each tier: the real binary agrees."""
    from kvtrace.devstack.backends import validate_config
    from kvtrace.devstack.pytest_plugin import require_binaries

    require_binaries("otelcol-kvtrace")
    pipe = pipeline(
        auth={"enabled": True, "tokenSecretRef": TOKEN_SECRET},
        tls={"enabled": True, "secretName": "collector-tls"},
    )
    pipe["spec"].update(
        sampling={"mode": "production"},
        collector={"replicas": replicas},
        receivers={"zipkin": {"enabled": True}, "jaeger": {"enabled": True}},
    )
    tiers = ["loadbalancer", "sampling"] if replicas > 1 else ["sampling"]
    for tier in tiers:
        proc = validate_config(render_collector_config(pipe, tier), workdir=tmp_path)
        assert proc.returncode == 0, f"{tier}: {proc.stderr}"
