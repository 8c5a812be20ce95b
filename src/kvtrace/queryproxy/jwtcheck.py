"""JSON Web Token checks of the ``oidc`` mode (pure: the keys come in, nothing is fetched).

Only what an OIDC access or ID token needs, and no more: compact JWS, algorithms **RS256**
and **ES256** only (``none``, HMAC and everything else are refused before any key is
looked at, so a public key can never be used as an HMAC secret), the key chosen by ``kid``
from the issuer's JWKS (RSA, or EC on P-256), then ``iss`` (exact), ``aud`` (the audience,
alone or in the list), ``exp`` (required) and ``nbf`` (when present) with a small leeway, and
optionally one required claim (equal, or a list containing the value, e.g. ``groups``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ALGORITHMS = ("RS256", "ES256")
MIN_RSA_BITS = 2048
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class TokenRejected(Exception):
    """Why a token is not accepted (safe to tell the client: never contains the token)."""


@dataclasses.dataclass(frozen=True)
class Jws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def algorithm(self) -> str:
        return str(self.header.get("alg"))

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenRejected("malformed token: not base64url") from None


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url(part))
    except (UnicodeDecodeError, ValueError):
        raise TokenRejected(f"malformed token: the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenRejected(f"malformed token: the {what} is not a JSON object")
    return value


def parse(token: str) -> Jws:
    """A compact JWS whose algorithm is allowed (nothing verified yet)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenRejected("malformed token: expected a JWT (three base64url parts)")
    header = _json_object(parts[0], "header")
    if header.get("alg") not in ALGORITHMS:
        raise TokenRejected(f"algorithm {header.get('alg')!r} not allowed (only {', '.join(ALGORITHMS)})")
    if "crit" in header:
        raise TokenRejected("critical header extensions are not supported")
    return Jws(header, _json_object(parts[1], "payload"), f"{parts[0]}.{parts[1]}".encode(), b64url(parts[2]))


def _int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"missing {name}")
    return int.from_bytes(b64url(value), "big")


def public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """An RSA or P-256 public key from a JWK; ValueError for anything else."""
    if jwk.get("kty") == "RSA":
        key = rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n")).public_key()
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
        return key
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return ec.EllipticCurvePublicNumbers(_int(jwk, "x"), _int(jwk, "y"), ec.SECP256R1()).public_key()
    raise ValueError(f"unsupported key type {jwk.get('kty')!r}/{jwk.get('crv')!r}")


def key_set(document: Mapping[str, Any]) -> dict[str | None, PublicKey]:
    """The usable signing keys of a JWKS document by ``kid`` (keys for encryption, of other
    types or malformed are left out; a key without ``kid`` is under None)."""
    keys: dict[str | None, PublicKey] = {}
    for jwk in document.get("keys") or []:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        try:
            key = public_key(jwk)
        except (ValueError, TokenRejected):
            continue
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) else None] = key
    return keys


def verify_signature(jws: Jws, key: PublicKey) -> None:
    try:
        if jws.algorithm == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(jws.signature, jws.signing_input, padding.PKCS1v15(), hashes.SHA256())
            return
        if jws.algorithm == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(jws.signature) != 64:
                raise TokenRejected("bad signature")
            r, s = int.from_bytes(jws.signature[:32], "big"), int.from_bytes(jws.signature[32:], "big")
            key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(hashes.SHA256()))
            return
    except InvalidSignature:
        raise TokenRejected("bad signature") from None
    raise TokenRejected(f"key {jws.kid!r} is not a key for {jws.algorithm}")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenRejected(f"claim {name} is not a number")
    return float(value)


def check_claims(claims: Mapping[str, Any], *, issuer: str, audience: str, now: float, leeway_s: float = 60,
                 required_claim: tuple[str, str] | None = None) -> None:
    if claims.get("iss") != issuer:
        raise TokenRejected(f"wrong issuer {claims.get('iss')!r}")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise TokenRejected("wrong audience")
    expires = _number(claims, "exp")
    if expires is None:
        raise TokenRejected("token has no exp")
    if now >= expires + leeway_s:
        raise TokenRejected("token expired")
    not_before = _number(claims, "nbf")
    if not_before is not None and now < not_before - leeway_s:
        raise TokenRejected("token not valid yet (nbf)")
    if required_claim is not None:
        name, value = required_claim
        present = claims.get(name)
        if not (present == value or (isinstance(present, list) and value in present)):
            raise TokenRejected(f"claim {name} does not hold the required value")
