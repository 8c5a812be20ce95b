"""A tiny OpenID Connect issuer for the query-proxy tests: it stands in for the user's
identity provider (Keycloak, Dex, a cloud IdP), not for a component of kvtrace.

Signing keys are generated here with ``cryptography`` (RSA 2048 for RS256, P-256 for ES256);
:func:`mint` signs any claims with any header, so tests can also forge bad tokens. The
:class:`Issuer` serves ``/.well-known/openid-configuration`` and the JWKS over https on a
loopback address, with a certificate of a test CA (``kvtrace_operator.pki``)."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kvtrace.devstack.proc import free_port
from kvtrace_operator import pki


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass
class SigningKey:
    kid: str
    alg: str  # RS256 or ES256
    private: Any = field(repr=False)

    @classmethod
    def new(cls, kid: str, alg: str = "RS256", rsa_bits: int = 2048) -> SigningKey:
        private = (
            rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
            if alg == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )
        return cls(kid, alg, private)

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        if isinstance(numbers, rsa.RSAPublicNumbers):
            return {
                "kty": "RSA",
                "kid": self.kid,
                "use": "sig",
                "alg": "RS256",
                "n": _uint(numbers.n),
                "e": _uint(numbers.e),
            }
        return {
            "kty": "EC",
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }

    def sign(self, signing_input: bytes) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return bytes(self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))
        r, s = decode_dss_signature(self.private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def mint(key: SigningKey, claims: dict[str, Any], *, header: dict[str, Any] | None = None) -> str:
    """A compact JWS of ``claims`` signed by ``key`` (``header`` overrides alg/kid/typ)."""
    head = {"alg": key.alg, "kid": key.kid, "typ": "JWT", **(header or {})}
    signing_input = (
        f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}".encode()
    )
    return f"{signing_input.decode()}.{b64url(key.sign(signing_input))}"


def claims(
    issuer: str, audience: str | list[str], *, lifetime_s: int = 300, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": "alice",
        "iat": now,
        "nbf": now - 5,
        "exp": now + lifetime_s,
        **extra,
    }


class Issuer:
    """Discovery and JWKS over https on 127.0.0.1 (``url`` is the issuer, ``ca_file`` its CA).
    ``keys`` may be changed while it runs (rotation); ``requests`` counts JWKS fetches."""

    def __init__(self, workdir: Path, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.jwks_requests = 0
        self.port = free_port("127.0.0.1")
        self.url = f"https://localhost:{self.port}/realms/kvtrace"
        now = dt.datetime.now(dt.UTC)
        ca = pki.make_ca("test idp ca", now, dt.timedelta(days=1))
        leaf = pki.issue(
            ca, "localhost", ["localhost"], now, dt.timedelta(days=1), ip_addresses=("127.0.0.1",)
        )
        self.ca_file = workdir / "idp-ca.crt"
        self.ca_file.write_text(ca.cert_pem)
        (workdir / "idp.crt").write_text(leaf.cert_pem)
        (workdir / "idp.key").write_text(leaf.key_pem)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(workdir / "idp.crt", workdir / "idp.key")
        self._server: http.server.ThreadingHTTPServer | None = None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                body: dict[str, Any]
                if self.path == "/realms/kvtrace/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/protocol/openid-connect/certs",
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    }
                elif self.path == "/realms/kvtrace/protocol/openid-connect/certs":
                    issuer.jwks_requests += 1
                    body = {"keys": [key.jwk() for key in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    @contextmanager
    def running(self) -> Iterator[Issuer]:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.socket = self._context.wrap_socket(self._server.socket, server_side=True)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=10)
