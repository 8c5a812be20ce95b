"""JSON Web Token checks of the ``oidc`` mode (pure: the keys come in, nothing is fetched).

Parsing, JWK decoding and signature verification are PyJWT's (on ``cryptography``); this
module holds the rules kvtrace adds and the claim checks (pure, with ``now`` as a parameter):
compact JWS, algorithms **RS256** and **ES256** only (``none``, HMAC and everything else are
refused before any key is looked at, so a public key can never be used as an HMAC secret),
``crit`` headers refused, the key chosen by ``kid`` from the issuer's JWKS (RSA of at least
2048 bits, or EC on P-256, of the header's algorithm), then ``iss`` (exact), ``aud`` (the
audience, alone or in the list), ``exp`` (required) and ``nbf`` (when present) with a small
leeway, and optionally one required claim (equal, or a list containing the value, e.g.
``groups``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.exceptions import DecodeError, InvalidSignatureError, InvalidTokenError, PyJWTError

ALGORITHMS = ("RS256", "ES256")
MIN_RSA_BITS = 2048
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
KEY_TYPES: dict[str, type[PublicKey]] = {
    "RS256": rsa.RSAPublicKey,
    "ES256": ec.EllipticCurvePublicKey,
}
_JWS = jwt.PyJWS(algorithms=list(ALGORITHMS))


class TokenRejected(Exception):
    """Why a token is not accepted (safe to tell the client: never contains the token)."""


@dataclasses.dataclass(frozen=True)
class Jws:
    header: dict[str, Any]
    claims: dict[str, Any]
    token: str

    @property
    def algorithm(self) -> str:
        return str(self.header.get("alg"))

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def parse(token: str) -> Jws:
    """A compact JWS whose algorithm is allowed (nothing verified yet)."""
    try:
        header = _JWS.get_unverified_header(token)
        if header.get("alg") not in ALGORITHMS:
            raise TokenRejected(
                f"algorithm {header.get('alg')!r} not allowed (only {', '.join(ALGORITHMS)})"
            )
        if "crit" in header:
            raise TokenRejected("critical header extensions are not supported")
        claims = jwt.decode(token, options={"verify_signature": False})
    except InvalidTokenError as exc:  # PyJWT's DecodeError, or its own refusal of crit
        raise TokenRejected(f"malformed token: {exc}") from None
    return Jws(header, claims, token)


def public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """An RSA (at least 2048 bits) or P-256 public key from a JWK; ValueError for anything else."""
    try:
        key = jwt.PyJWK(dict(jwk)).key
    except (PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"unusable JWK: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
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
        except ValueError:
            continue
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) else None] = key
    return keys


def verify_signature(jws: Jws, key: PublicKey) -> None:
    """The signature is ``key``'s, with the header's algorithm; TokenRejected otherwise."""
    if not isinstance(key, KEY_TYPES[jws.algorithm]):
        raise TokenRejected(f"key {jws.kid!r} is not a key for {jws.algorithm}")
    try:
        _JWS.decode_complete(jws.token, key, algorithms=[jws.algorithm])
    except InvalidSignatureError:
        raise TokenRejected("bad signature") from None
    except DecodeError as exc:
        raise TokenRejected(f"malformed token: {exc}") from None


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenRejected(f"claim {name} is not a number")
    return float(value)


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway_s: float = 60,
    required_claim: tuple[str, str] | None = None,
) -> None:
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
