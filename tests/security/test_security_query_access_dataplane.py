"""Jaeger's query API behind HTTP Basic (``spec.jaeger.query.auth.mode: basic``) on the real
Jaeger v1.76 running the rendered config (docs/security.md, "Access to trace data"): without or with
wrong credentials both query ports refuse (HTTP 401, gRPC UNAUTHENTICATED), with them the
trace comes back; kvtrace's own clients (the canary's lookup, ``kvtrace traces``) send them.
Every mode's rendered config passes ``jaeger validate`` (with managed TLS too), and with
managed TLS both query ports serve the Jaeger leaf, verified with the CA for the Service name."""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace import canary
from kvtrace.devstack.backends import Jaeger, send_probe_trace, validate_config
from kvtrace.inspect import doctor
from kvtrace.shared.jaeger_client import CREDENTIALS_ENV, JaegerClient, JaegerError
from kvtrace_operator import pki
from kvtrace_operator.render import render_jaeger_config
from kvtrace_operator.render.query_access import EXTENSION
from kvtrace_operator.render.tls import leaves
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.dataplane

SERVICE = "query-access-kv"
GET_SERVICES = "/jaeger.api_v3.QueryService/GetServices"


def tp(auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store"},
        "spec": {"jaeger": {"query": {"auth": auth}}, "security": {"tls": {"enabled": False}}},
    }


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def http_get(url: str, credentials: str | None) -> tuple[int, str]:
    request = urllib.request.Request(
        url, headers={"Authorization": basic(credentials)} if credentials else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def grpc_status(address: str, credentials: str | None, workdir: Path) -> str:
    """grpc-status of an empty GetServices call over h2c (curl speaks gRPC's framing)."""
    frame = workdir / "empty.grpc"
    frame.write_bytes(b"\x00\x00\x00\x00\x00")  # uncompressed, zero-length message
    command = [
        str(shutil.which("curl")),
        "-sS",
        "--max-time",
        "5",
        "--http2-prior-knowledge",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        f"@{frame}",
        "-D",
        "-",
        "-o",
        os.devnull,
        f"http://{address}{GET_SERVICES}",
    ]
    if credentials:
        command[-1:-1] = ["-H", f"authorization: {basic(credentials)}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=15, check=True).stdout
    return next(
        line.split(":", 1)[1].strip()
        for line in out.splitlines()
        if line.lower().startswith("grpc-status:")
    )


@pytest.mark.parametrize(
    "auth",
    [
        {"mode": "none"},
        {"mode": "basic"},
        {"mode": "basic", "credentialsSecretRef": {"name": "users", "key": "htpasswd"}},
    ],
)
def test_every_query_auth_mode_passes_jaeger_validate(auth: dict[str, Any], tmp_path: Path) -> None:
    proc = validate_config(render_jaeger_config(tp(auth)), binary="jaeger", workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_basic_query_auth_refuses_without_credentials_and_answers_with_them(
    poll: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert shutil.which("curl"), "curl (HTTP/2) is needed to speak gRPC to the query port"
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    credentials = "kvtrace:" + secrets.token_urlsafe(32)  # what the operator generates
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(credentials + "\n")
    config = render_jaeger_config(tp({"mode": "basic"}))
    config["extensions"][EXTENSION]["htpasswd"]["file"] = str(
        htpasswd
    )  # the Secret's mount, locally
    wrong_password = credentials[:-1] + ("A" if credentials[-1] != "A" else "B")

    with Jaeger(config, workdir=tmp_path / "jaeger") as jaeger:
        trace_id = send_probe_trace(jaeger.otlp_http, SERVICE)
        client = JaegerClient(jaeger.query_url, credentials=credentials)
        found = poll(
            lambda: client.trace(trace_id),
            timeout=30,
            message="the probe trace, queried with credentials",
        )
        assert {span.name for span in found.spans} == {"PUT", "replicate"}

        services = f"{jaeger.query_url}/api/v3/services"
        assert http_get(services, None)[0] == 401
        assert http_get(services, wrong_password)[0] == 401
        assert http_get(services, "someone:" + credentials.split(":", 1)[1])[0] == 401
        status, body = http_get(services, credentials)
        assert status == 200 and SERVICE in body
        assert http_get(f"{jaeger.query_url}/api/v3/traces/{trace_id}", None)[0] == 401
        assert http_get(f"{jaeger.query_url}/api/v3/traces/{trace_id}", credentials)[0] == 200

        grpc = jaeger.endpoint("jaeger_query/grpc")
        assert grpc_status(grpc, None, tmp_path) == "16"  # UNAUTHENTICATED
        assert grpc_status(grpc, wrong_password, tmp_path) == "16"
        assert grpc_status(grpc, credentials, tmp_path) == "0"

        # The operator canary's lookup.
        assert canary.in_jaeger(jaeger.query_url, trace_id, credentials=credentials)
        with pytest.raises(
            JaegerError, match=f"401: .*credentials are needed \\(\\${CREDENTIALS_ENV}\\)"
        ) as refused:
            canary.in_jaeger(jaeger.query_url, trace_id)
        # kvtrace doctor's canary check tells how to give them.
        check = doctor.check_canary(
            {
                "trace_id": trace_id,
                "collector": jaeger.otlp_http,
                "jaeger": jaeger.query_url,
                "timeout": 3.0,
                "waited": 3.0,
                "found": False,
                "jaeger_error": canary.error_text(refused.value),
            }
        )
        assert check.summary == f"Jaeger at {jaeger.query_url} asks for query credentials"
        assert "--jaeger-credentials-file" in check.fix and CREDENTIALS_ENV in check.fix

        # kvtrace traces: the option, the environment variable, and neither.
        command = [
            sys.executable,
            "-m",
            "kvtrace",
            "traces",
            "--jaeger",
            jaeger.query_url,
            "--service",
            SERVICE,
            "--summary",
        ]
        env = {key: value for key, value in os.environ.items() if key != CREDENTIALS_ENV}
        with_file = subprocess.run(
            [*command, "--jaeger-credentials-file", str(htpasswd)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert with_file.returncode == 0 and trace_id in with_file.stdout, with_file.stderr
        with_env = subprocess.run(
            command,
            env={**env, CREDENTIALS_ENV: credentials},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert with_env.returncode == 0 and trace_id in with_env.stdout, with_env.stderr
        without = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert without.returncode == 2
        assert "401" in without.stderr and CREDENTIALS_ENV in without.stderr, without.stderr


MANAGED_TLS = {"security": {"tls": {"enabled": True}}}


@pytest.mark.parametrize("auth", [{"mode": "none"}, {"mode": "basic"}, {"mode": "bearer"}])
def test_tls_configs_pass_jaeger_validate(auth: dict[str, Any], tmp_path: Path) -> None:
    pipeline = tp(auth)
    pipeline["spec"].update(MANAGED_TLS)
    proc = validate_config(render_jaeger_config(pipeline), binary="jaeger", workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_basic_query_auth_over_tls_with_the_jaeger_leaf(poll: Any, tmp_path: Path) -> None:
    """Managed TLS: Jaeger's own query servers (HTTP and gRPC) serve the Jaeger leaf, which
    names the query Service; clients verify it with the CA for that name."""
    pipeline = tp({"mode": "basic"})
    pipeline["spec"].update(MANAGED_TLS)
    now = dt.datetime.now(dt.UTC)
    ca = pki.make_ca("traces ca", now, dt.timedelta(days=1))
    [leaf] = [
        leaf
        for leaf in leaves(pipeline, parse_pipeline(pipeline["spec"]))
        if leaf["secret"] == "traces-jaeger-tls"
    ]
    pair = pki.issue(ca, leaf["commonName"], leaf["dnsNames"], now, dt.timedelta(hours=1))
    (tmp_path / "tls.crt").write_text(pair.cert_pem)
    (tmp_path / "tls.key").write_text(pair.key_pem)
    (tmp_path / "ca.crt").write_text(ca.cert_pem)
    credentials = "kvtrace:" + secrets.token_urlsafe(32)
    (tmp_path / "htpasswd").write_text(credentials + "\n")
    text = yaml.safe_dump(render_jaeger_config(pipeline)).replace(
        "/etc/jaeger-serving", str(tmp_path)
    )
    config = yaml.safe_load(text.replace("/etc/jaeger-query-auth", str(tmp_path)))
    config["receivers"]["otlp"] = {
        "protocols": {"grpc": {}, "http": {}}
    }  # the OTLP hop's TLS: tls tests
    name = "traces-jaeger-query.store.svc"

    with Jaeger(config, workdir=tmp_path / "jaeger") as jaeger:
        trace_id = send_probe_trace(jaeger.otlp_http, SERVICE)
        url = "https://" + jaeger.endpoint("jaeger_query/http")
        client = JaegerClient(
            url, credentials=credentials, ca_pem=ca.cert_pem, server_hostname=name
        )
        found = poll(
            lambda: client.trace(trace_id), timeout=30, message="the probe trace over https"
        )
        assert {span.name for span in found.spans} == {"PUT", "replicate"}
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            JaegerClient(url, credentials=credentials, server_hostname=name).trace(trace_id)
        with pytest.raises(JaegerError, match="401"):
            JaegerClient(url, credentials="", ca_pem=ca.cert_pem, server_hostname=name).trace(
                trace_id
            )
        # gRPC over TLS, verified for the Service name.
        host, port = jaeger.endpoint("jaeger_query/grpc").rsplit(":", 1)
        frame = tmp_path / "empty.grpc"
        frame.write_bytes(b"\x00\x00\x00\x00\x00")
        out = subprocess.run(
            [
                str(shutil.which("curl")),
                "-sS",
                "--max-time",
                "5",
                "--http2",
                "--cacert",
                str(tmp_path / "ca.crt"),
                "--resolve",
                f"{name}:{port}:{host}",
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "-H",
                f"authorization: {basic(credentials)}",
                "--data-binary",
                f"@{frame}",
                "-D",
                "-",
                "-o",
                os.devnull,
                f"https://{name}:{port}{GET_SERVICES}",
            ],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
        assert "grpc-status: 0" in out.lower(), out
