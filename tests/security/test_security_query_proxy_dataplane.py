"""``kvtrace query-proxy`` in front of the real Jaeger v1.76 (docs/security.md, bearer/OIDC query
access): the proxy runs as its own process with the flags the operator renders, Jaeger
with the rendered config (its query servers on loopback), and a tiny https OIDC issuer
(tests/security/oidc_issuer.py) stands in for the user's identity provider.

No token, a wrong or expired one, another audience, another key, another algorithm: 401
with ``WWW-Authenticate: Bearer``. A valid one: the trace. kvtrace's own clients (the
operator canary's lookup, ``kvtrace traces --jaeger-token-file``) go through it, and with
TLS they verify the proxy's certificate with the CA."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oidc_issuer import Issuer, SigningKey, claims, mint

from kvtrace import canary
from kvtrace.devstack.backends import Jaeger, send_probe_trace, validate_config
from kvtrace.devstack.proc import Process, free_port, port_open, wait_until
from kvtrace.shared.jaeger_client import CREDENTIALS_ENV, TOKEN_ENV, JaegerClient, JaegerError
from kvtrace_operator import pki
from kvtrace_operator.render import render_jaeger_config

pytestmark = pytest.mark.dataplane

SERVICE = "query-proxy-kv"
AUDIENCE = "jaeger-query"


def tp(auth: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store"},
        "spec": {
            "jaeger": {"query": {"auth": auth}},
            "security": {"tls": {"enabled": False}},
            **spec,
        },
    }


class Proxy:
    """One ``kvtrace query-proxy`` process on a loopback address of its own."""

    def __init__(self, workdir: Path, address: str, *flags: str) -> None:
        self.address, self.port = address, free_port(address)
        argv = [
            sys.executable,
            "-m",
            "kvtrace",
            "query-proxy",
            "--listen",
            f"{address}:{self.port}",
            *flags,
        ]
        self.process = Process(
            "query-proxy", argv, workdir / f"query-proxy-{self.port}.log"
        ).start()
        wait_until(
            lambda: port_open(address, self.port) or self.process.returncode is not None,
            timeout=30,
            what="query-proxy listening",
        )
        assert self.process.alive(), self.process.tail()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{self.address}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Any]:
    started: list[Proxy] = []

    def start(*flags: str, address: str = "127.0.0.1") -> Proxy:
        started.append(Proxy(tmp_path, address, *flags))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Jaeger, str]]:
    """The real Jaeger with the rendered bearer-mode config, and one probe trace in it."""
    config = render_jaeger_config(tp({"mode": "bearer"}))
    with Jaeger(config, workdir=tmp_path_factory.mktemp("jaeger")) as backend:
        trace_id = send_probe_trace(backend.otlp_http, SERVICE)
        deadline = time.monotonic() + 30
        while backend.client().trace(trace_id) is None:
            assert time.monotonic() < deadline, "the probe trace never reached Jaeger"
            time.sleep(0.2)
        yield backend, trace_id


def get(url: str, authorization: str | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(
        url, headers={"Authorization": authorization} if authorization else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def refused(url: str, authorization: str | None, reason: str | None) -> None:
    """401 with a Bearer challenge; ``reason`` (a token was presented) in error_description."""
    status, headers, body = get(url, authorization)
    assert status == 401, (status, body)
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="jaeger-query"'), challenge
    if reason is None:
        assert "error=" not in challenge
    else:
        assert 'error="invalid_token"' in challenge and reason in challenge, challenge
    assert json.loads(body)["error"] == "unauthorized"


@pytest.mark.parametrize(
    "auth",
    [
        {"mode": "bearer"},
        {
            "mode": "oidc",
            "oidc": {"issuer": "https://idp.example.com/realms/kvtrace", "audience": AUDIENCE},
        },
    ],
)
def test_proxy_modes_pass_jaeger_validate(auth: dict[str, Any], tmp_path: Path) -> None:
    proc = validate_config(render_jaeger_config(tp(auth)), binary="jaeger", workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_bearer_mode(
    jaeger: tuple[Jaeger, str],
    proxies: Any,
    loopback_ip: Any,
    tmp_path: Path,
    poll: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, trace_id = jaeger
    token = secrets.token_urlsafe(32)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the operator's\n{token}\n\n")
    proxy = proxies(
        "--mode",
        "bearer",
        "--upstream",
        backend.query_url,
        "--tokens-file",
        str(tokens),
        address=loopback_ip(),
    )
    services = f"{proxy.url()}/api/v3/services"
    refused(services, None, None)
    refused(services, f"Bearer {token}x", "unknown token")
    refused(services, f"Bearer {token[:-1]}", "unknown token")
    refused(services, "Basic a3Z0cmFjZTpzM2NyZXQ=", "expected Authorization: Bearer TOKEN")
    refused(f"{proxy.url()}/api/v3/traces/{trace_id}", None, None)
    refused(f"{proxy.url()}/", None, None)  # the UI too
    status, _, body = get(services, f"Bearer {token}")
    assert status == 200 and SERVICE in body
    found = JaegerClient(proxy.url(), token=token).trace(trace_id)
    assert found is not None and {span.name for span in found.spans} == {"PUT", "replicate"}

    # The operator canary's lookup, and the client's message without or with a wrong token.
    assert canary.in_jaeger(proxy.url(), trace_id, token=token)
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(
        JaegerError,
        match=f"401: .*asks for a bearer token and the token is needed \\(\\${TOKEN_ENV}\\)",
    ):
        canary.in_jaeger(proxy.url(), trace_id)
    with pytest.raises(JaegerError, match="the token was refused \\(unknown token\\)"):
        canary.in_jaeger(proxy.url(), trace_id, token="wrong")

    # kvtrace traces: --jaeger-token-file, $KVTRACE_JAEGER_TOKEN, and neither.
    command = [
        sys.executable,
        "-m",
        "kvtrace",
        "traces",
        "--jaeger",
        proxy.url(),
        "--service",
        SERVICE,
        "--summary",
    ]
    env = {
        key: value for key, value in os.environ.items() if key not in (TOKEN_ENV, CREDENTIALS_ENV)
    }
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    with_file = subprocess.run(
        [*command, "--jaeger-token-file", str(token_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert with_file.returncode == 0 and trace_id in with_file.stdout, with_file.stderr
    with_env = subprocess.run(
        command, env={**env, TOKEN_ENV: token}, capture_output=True, text=True, timeout=60
    )
    assert with_env.returncode == 0 and trace_id in with_env.stdout, with_env.stderr
    without = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert without.returncode == 2 and "401" in without.stderr and TOKEN_ENV in without.stderr, (
        without.stderr
    )

    # Concurrent readers, good and bad tokens mixed (bounded: 200 requests on 8 threads).
    def status(i: int) -> tuple[bool, int]:
        good = i % 3 != 0
        return good, get(services, f"Bearer {token if good else token + str(i)}")[0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(status, range(200)))
    assert all(code == (200 if good else 401) for good, code in answers), answers
    assert proxy.process.alive()

    # A changed Secret (the kubelet swaps the file): the new token works, the old one no longer.
    rotated = secrets.token_urlsafe(32)
    (tmp_path / "tokens.new").write_text(f"{rotated}\n")
    os.replace(tmp_path / "tokens.new", tokens)
    poll(
        lambda: get(services, f"Bearer {rotated}")[0] == 200,
        timeout=15,
        message="the rotated token accepted",
    )
    refused(services, f"Bearer {token}", "unknown token")
    assert token not in proxy.process.tail(200) and rotated not in proxy.process.tail(200)


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[Issuer]:
    with Issuer(
        tmp_path, [SigningKey.new("rsa-1", "RS256"), SigningKey.new("ec-1", "ES256")]
    ).running() as idp:
        yield idp


def test_oidc_mode(
    jaeger: tuple[Jaeger, str],
    proxies: Any,
    loopback_ip: Any,
    issuer: Issuer,
    tmp_path: Path,
    poll: Any,
) -> None:
    backend, trace_id = jaeger
    service_token = secrets.token_urlsafe(32)  # the generated Secret: the operator canary's token
    tokens = tmp_path / "tokens"
    tokens.write_text(service_token + "\n")
    proxy = proxies(
        "--mode",
        "oidc",
        "--upstream",
        backend.query_url,
        "--issuer",
        issuer.url,
        "--audience",
        AUDIENCE,
        "--oidc-ca-file",
        str(issuer.ca_file),
        "--tokens-file",
        str(tokens),
        "--required-claim",
        "groups=trace-readers",
        "--jwks-min-refresh",
        "1",
        address=loopback_ip(),
    )
    services = f"{proxy.url()}/api/v3/services"
    rsa_key, ec_key = issuer.keys
    reader = {"groups": ["dev", "trace-readers"]}

    def bearer(key: SigningKey, **changes: Any) -> str:
        values = {**claims(issuer.url, AUDIENCE, **reader), **changes}
        return "Bearer " + mint(key, {k: v for k, v in values.items() if v is not None})

    for key in (rsa_key, ec_key):
        status, _, body = get(services, bearer(key))
        assert status == 200 and SERVICE in body, body
    assert get(services, f"Bearer {service_token}")[0] == 200
    assert canary.in_jaeger(
        proxy.url(), trace_id, token=mint(ec_key, claims(issuer.url, AUDIENCE, **reader))
    )

    now = int(time.time())
    refused(services, None, None)
    refused(services, bearer(rsa_key, exp=now - 120, iat=now - 600, nbf=now - 600), "token expired")
    refused(services, bearer(rsa_key, nbf=now + 600), "not valid yet")
    refused(services, bearer(rsa_key, aud="another-client"), "wrong audience")
    refused(
        services, bearer(rsa_key, iss="https://evil.example.com/realms/kvtrace"), "wrong issuer"
    )
    refused(
        services, bearer(rsa_key, groups=["dev"]), "claim groups does not hold the required value"
    )
    refused(services, bearer(rsa_key, exp=None), "token has no exp")
    refused(
        services, bearer(SigningKey.new("rsa-1", "RS256")), "bad signature"
    )  # same kid, another key
    refused(services, bearer(SigningKey.new("stranger", "RS256")), "unknown key id")
    refused(
        services,
        "Bearer " + mint(rsa_key, claims(issuer.url, AUDIENCE, **reader), header={"alg": "none"}),
        "algorithm",
    )
    refused(services, "Bearer not-a-jwt-nor-a-known-token", "unknown token")

    # The issuer rotates its key: a token with the new kid makes the proxy fetch the JWKS again.
    before = issuer.jwks_requests
    rotated = SigningKey.new("rsa-2", "RS256")
    issuer.keys = [rotated, ec_key]
    poll(
        lambda: get(services, bearer(rotated))[0] == 200,
        timeout=15,
        message="a token of the rotated key accepted",
    )
    assert issuer.jwks_requests > before
    refused(services, bearer(rsa_key), "unknown key id")  # the retired key is gone from the cache


def test_oidc_issuer_down_at_start_then_up(
    jaeger: tuple[Jaeger, str], proxies: Any, loopback_ip: Any, tmp_path: Path, poll: Any
) -> None:
    """The identity provider is down when the proxy starts: JWTs get 401 (keys not
    available), static tokens still work; once it is up, the next token fetches the keys."""
    backend, _ = jaeger
    service_token = secrets.token_urlsafe(32)
    (tmp_path / "tokens").write_text(service_token)
    issuer = Issuer(tmp_path, [SigningKey.new("ec-1", "ES256")])
    proxy = proxies(
        "--mode",
        "oidc",
        "--upstream",
        backend.query_url,
        "--issuer",
        issuer.url,
        "--audience",
        AUDIENCE,
        "--oidc-ca-file",
        str(issuer.ca_file),
        "--tokens-file",
        str(tmp_path / "tokens"),
        "--jwks-min-refresh",
        "1",
        address=loopback_ip(),
    )
    services = f"{proxy.url()}/api/v3/services"
    token = "Bearer " + mint(issuer.keys[0], claims(issuer.url, AUDIENCE))
    refused(services, token, "signing keys are not available")
    assert get(services, f"Bearer {service_token}")[0] == 200
    with issuer.running():
        poll(
            lambda: get(services, token)[0] == 200,
            timeout=15,
            message="the JWT accepted once the issuer is up",
        )
    assert "cannot fetch the signing keys" in proxy.process.tail(100)


def test_unknown_key_ids_refetch_the_keys_at_most_once_per_interval(
    jaeger: tuple[Jaeger, str], proxies: Any, loopback_ip: Any, issuer: Issuer
) -> None:
    """Tokens with made-up key ids cannot make the proxy hammer the issuer: one refetch per
    --jwks-min-refresh (default 10 s), whatever the number of such tokens."""
    backend, _ = jaeger
    proxy = proxies(
        "--mode",
        "oidc",
        "--upstream",
        backend.query_url,
        "--issuer",
        issuer.url,
        "--audience",
        AUDIENCE,
        "--oidc-ca-file",
        str(issuer.ca_file),
        address=loopback_ip(),
    )
    services = f"{proxy.url()}/api/v3/services"
    assert get(services, "Bearer " + mint(issuer.keys[0], claims(issuer.url, AUDIENCE)))[0] == 200
    before = issuer.jwks_requests
    started = time.monotonic()
    for index in range(20):
        stranger = SigningKey(f"made-up-{index}", "RS256", issuer.keys[0].private)
        refused(
            services, "Bearer " + mint(stranger, claims(issuer.url, AUDIENCE)), "unknown key id"
        )
    assert time.monotonic() - started < 10, "too slow to tell: the interval may have passed"
    assert issuer.jwks_requests - before <= 1, issuer.jwks_requests - before


def test_tls_on_the_proxy_is_verified_with_the_ca(
    jaeger: tuple[Jaeger, str], proxies: Any, loopback_ip: Any, tmp_path: Path, poll: Any
) -> None:
    """Managed TLS: the proxy serves the Jaeger leaf (renewed files are picked up); the
    canary's lookup verifies it with the CA for the query Service's name."""
    backend, trace_id = jaeger
    now = dt.datetime.now(dt.UTC)
    ca = pki.make_ca("traces ca", now, dt.timedelta(days=1))
    name = "traces-jaeger-query.store.svc"

    def leaf() -> pki.KeyPair:
        pair = pki.issue(ca, "traces-jaeger-query", [name], now, dt.timedelta(hours=1))
        (tmp_path / "tls.crt").write_text(pair.cert_pem)
        (tmp_path / "tls.key").write_text(pair.key_pem)
        return pair

    first = leaf()
    token = secrets.token_urlsafe(32)
    (tmp_path / "tokens").write_text(token)
    proxy = proxies(
        "--mode",
        "bearer",
        "--upstream",
        backend.query_url,
        "--tokens-file",
        str(tmp_path / "tokens"),
        "--tls-cert-file",
        str(tmp_path / "tls.crt"),
        "--tls-key-file",
        str(tmp_path / "tls.key"),
        address=loopback_ip(),
    )
    url = proxy.url("https")
    assert canary.in_jaeger(url, trace_id, token=token, ca_pem=ca.cert_pem, server_hostname=name)
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        canary.in_jaeger(
            url, trace_id, token=token, server_hostname=name
        )  # the system's CAs do not know it
    with pytest.raises(OSError, match="match|mismatch"):
        canary.in_jaeger(
            url, trace_id, token=token, ca_pem=ca.cert_pem, server_hostname="traces-jaeger-otlp"
        )
    other_ca = pki.make_ca("another ca", now, dt.timedelta(days=1))
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        canary.in_jaeger(url, trace_id, token=token, ca_pem=other_ca.cert_pem, server_hostname=name)
    kubelet = (
        ssl.create_default_context()
    )  # the rendered HTTPS probe: the kubelet verifies no certificate
    kubelet.check_hostname, kubelet.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(f"{url}/healthz", timeout=10, context=kubelet) as health:
        assert health.status == 200

    def served() -> str:
        import socket

        context = ssl.create_default_context(cadata=ca.cert_pem)
        with (
            socket.create_connection((proxy.address, proxy.port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname=name) as tls,
        ):
            return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True) or b"")

    assert pki.info(served()).fingerprint == pki.info(first.cert_pem).fingerprint
    second = leaf()
    poll(
        lambda: pki.info(served()).fingerprint == pki.info(second.cert_pem).fingerprint,
        timeout=15,
        message="the renewed leaf served without a restart",
    )
    assert proxy.process.alive()


def test_bad_flags_and_unreadable_files_exit_2_naming_them(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "kvtrace", "query-proxy", "--listen", f"127.0.0.1:{free_port()}"]
    missing = subprocess.run(
        [*base, "--mode", "bearer", "--tokens-file", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and str(tmp_path / "absent") in missing.stderr, missing.stderr
    no_issuer = subprocess.run(
        [*base, "--mode", "oidc", "--audience", "a"], capture_output=True, text=True, timeout=60
    )
    assert no_issuer.returncode == 2 and "--issuer: required with --mode oidc" in no_issuer.stderr


def test_jaeger_not_answering_is_a_502_after_authentication(
    proxies: Any, loopback_ip: Any, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(32)
    (tmp_path / "tokens").write_text(token)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxy = proxies(
        "--mode",
        "bearer",
        "--upstream",
        closed,
        "--tokens-file",
        str(tmp_path / "tokens"),
        address=loopback_ip(),
    )
    refused(f"{proxy.url()}/api/v3/services", None, None)  # authentication first
    status, _, body = get(f"{proxy.url()}/api/v3/services", f"Bearer {token}")
    assert status == 502 and json.loads(body)["error"] == "bad_gateway", body
    assert proxy.process.alive()


def test_healthz_answers_the_tokenless_kubelet_itself_and_nothing_else_is_open(
    proxies: Any, loopback_ip: Any, tmp_path: Path
) -> None:
    """The rendered liveness/readiness probes (GET /healthz, no token): answered by the proxy
    even while Jaeger is down (not forwarded); other methods and paths still need a token."""
    (tmp_path / "tokens").write_text(secrets.token_urlsafe(32))
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a forwarded request would be a 502
    proxy = proxies(
        "--mode",
        "bearer",
        "--upstream",
        closed,
        "--tokens-file",
        str(tmp_path / "tokens"),
        address=loopback_ip(),
    )
    status, headers, body = get(f"{proxy.url()}/healthz")
    assert (status, body, headers["Cache-Control"]) == (200, "ok\n", "no-store")
    for path in ("/healthz/", "/healthz/../api/v3/services", "/healthzx", "/api/v3/healthz"):
        refused(f"{proxy.url()}{path}", None, None)
    request = urllib.request.Request(f"{proxy.url()}/healthz", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(request, timeout=10)
    assert post.value.code == 401
