"""The pure parts of ``kvtrace query-proxy`` (docs/security.md, bearer/OIDC query access): its flags,
static token matching, and the JWT checks with keys generated here (``cryptography``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from oidc_issuer import SigningKey, b64url, claims, mint

from kvtrace.queryproxy import headers, jwtcheck, tokens
from kvtrace.queryproxy.settings import SettingsError, from_flags

pytestmark = pytest.mark.unit

ISSUER = "https://idp.example.com/realms/kvtrace"
AUDIENCE = "jaeger-query"
BASE = {"listen": "0.0.0.0:16686", "upstream": "http://127.0.0.1:16687"}


# ---- settings --------------------------------------------------------------------------------


def test_settings_of_both_modes() -> None:
    bearer = from_flags(mode="bearer", tokens_file="/etc/q/tokens", **BASE)
    assert (bearer.listen_host, bearer.listen_port, bearer.upstream, bearer.oidc) == (
        "0.0.0.0",
        16686,
        "http://127.0.0.1:16687",
        None,
    )
    oidc = from_flags(
        mode="oidc",
        issuer=ISSUER,
        audience=AUDIENCE,
        required_claim="groups=trace-readers",
        tls_cert_file="/c/tls.crt",
        tls_key_file="/c/tls.key",
        **BASE,
    )
    assert oidc.oidc is not None and oidc.oidc.required_claim == ("groups", "trace-readers")
    assert oidc.tokens_file is None and oidc.tls_cert_file == "/c/tls.crt"


BAD_FLAGS = [
    ({"mode": "basic"}, "--mode", "expected one of bearer, oidc"),
    ({"mode": "bearer"}, "--tokens-file", "required with --mode bearer"),
    ({"mode": "bearer", "tokens_file": "t", "listen": "16686"}, "--listen", "expected HOST:PORT"),
    (
        {"mode": "bearer", "tokens_file": "t", "listen": "0.0.0.0:99999"},
        "--listen",
        "expected HOST:PORT",
    ),
    (
        {"mode": "bearer", "tokens_file": "t", "upstream": "https://127.0.0.1:1"},
        "--upstream",
        "expected http://",
    ),
    (
        {"mode": "bearer", "tokens_file": "t", "issuer": ISSUER},
        "--issuer",
        "only used with --mode oidc",
    ),
    ({"mode": "oidc", "audience": AUDIENCE}, "--issuer", "required with --mode oidc"),
    ({"mode": "oidc", "issuer": ISSUER}, "--audience", "required with --mode oidc"),
    (
        {"mode": "oidc", "issuer": "http://idp.example.com", "audience": "a"},
        "--issuer",
        "expected an https URL",
    ),
    ({"mode": "oidc", "issuer": ISSUER + "?x=1", "audience": "a"}, "--issuer", "without query"),
    (
        {"mode": "oidc", "issuer": ISSUER, "audience": "a", "required_claim": "groups"},
        "--required-claim",
        "expected NAME=VALUE",
    ),
    ({"mode": "bearer", "tokens_file": "t", "tls_cert_file": "c"}, "--tls-key-file", "go together"),
    (
        {"mode": "bearer", "tokens_file": "t", "reload_interval_s": 0},
        "--reload-interval",
        "at least 0.1",
    ),
]


@pytest.mark.parametrize(
    ("flags", "flag", "phrase"), BAD_FLAGS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD_FLAGS)]
)
def test_bad_flags_name_the_flag(flags: dict[str, Any], flag: str, phrase: str) -> None:
    with pytest.raises(SettingsError, match=phrase) as error:
        from_flags(**{**BASE, **flags})
    assert error.value.flag == flag and str(error.value).startswith(f"{flag}: ")


# ---- static tokens ---------------------------------------------------------------------------


def test_tokens_file_lines_comments_and_blanks() -> None:
    assert tokens.parse_tokens("# readers\n\n  abc  \nkvtrace:def\n#x\n") == ("abc", "kvtrace:def")
    assert tokens.parse_tokens("") == ()
    assert tokens.unusable(("abc-_.~+/=", "kvtrace:pass", "a b", "ok==")) == [2, 3]


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.DEF-_~+/=", "abc.DEF-_~+/="),
        ("bearer  abc", "abc"),
        ("BEARER abc", "abc"),
        (None, None),
        ("", None),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("Bearer a,b", None),
        ("Bearerabc", None),
    ],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert tokens.bearer(header) == token


def test_matches_any_token_of_the_file_and_nothing_else() -> None:
    known = tokens.digests(("first-token", "second-token"))
    assert tokens.matches("second-token", known) and tokens.matches("first-token", known)
    for other in ("second-toke", "second-tokenx", "", "SECOND-TOKEN"):
        assert not tokens.matches(other, known)
    assert not tokens.matches("anything", ())


# ---- JWT checks ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.new("rsa-1", "RS256")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.new("ec-1", "ES256")


def verify(token: str, key: SigningKey, now: float | None = None, **options: Any) -> dict[str, Any]:
    """What the proxy does with a token: parse, pick the key by kid, verify, check the claims."""
    jws = jwtcheck.parse(token)
    keys = jwtcheck.key_set({"keys": [key.jwk()]})
    if jws.kid not in keys:
        raise jwtcheck.TokenRejected(f"unknown key id {jws.kid!r}")
    jwtcheck.verify_signature(jws, keys[jws.kid])
    jwtcheck.check_claims(
        jws.claims, issuer=ISSUER, audience=AUDIENCE, now=now or time.time(), **options
    )
    return jws.claims


@pytest.mark.parametrize("which", ["rsa_key", "ec_key"])
def test_valid_tokens_of_both_algorithms(which: str, request: pytest.FixtureRequest) -> None:
    key: SigningKey = request.getfixturevalue(which)
    assert verify(mint(key, claims(ISSUER, AUDIENCE)), key)["sub"] == "alice"
    assert verify(mint(key, claims(ISSUER, ["other", AUDIENCE])), key)["aud"] == ["other", AUDIENCE]


@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", "PS256", "ES384", None])
def test_other_algorithms_are_refused_before_any_key(rsa_key: SigningKey, alg: str | None) -> None:
    token = mint(rsa_key, claims(ISSUER, AUDIENCE), header={"alg": alg})
    with pytest.raises(jwtcheck.TokenRejected, match="not allowed"):
        jwtcheck.parse(token)


def test_hmac_with_the_public_key_as_secret_is_refused(rsa_key: SigningKey) -> None:
    """The classic confusion attack: HS256 signed with the RSA public key's bytes."""
    import hashlib
    import hmac

    head = b64url(json.dumps({"alg": "HS256", "kid": rsa_key.kid}).encode())
    body = b64url(json.dumps(claims(ISSUER, AUDIENCE)).encode())
    secret = json.dumps(rsa_key.jwk()).encode()
    signature = b64url(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(jwtcheck.TokenRejected, match="'HS256' not allowed"):
        verify(f"{head}.{body}.{signature}", rsa_key)


@pytest.mark.parametrize(
    ("token", "phrase"),
    [
        ("abc", "malformed token: Not enough segments"),
        ("a.b", "malformed token: Not enough segments"),
        ("a..c", "malformed token: Invalid header"),
        (
            f"{b64url(b'[1]')}.{b64url(b'{}')}.AA",
            "malformed token: Invalid header string: must be a json object",
        ),
        (f"{b64url(b'not json')}.{b64url(b'{}')}.AA", "malformed token: Invalid header string"),
        (
            f"{b64url(json.dumps({'alg': 'RS256'}).encode())}.{b64url(b'[]')}.AA",
            "malformed token: Invalid payload string: must be a json object",
        ),
        (
            f"{b64url(json.dumps({'alg': 'RS256', 'crit': ['exp']}).encode())}.{b64url(b'{}')}.AA",
            "critical",
        ),
        # An extension PyJWT itself understands (b64) is refused all the same.
        (
            f"{b64url(json.dumps({'alg': 'RS256', 'crit': ['b64'], 'b64': False}).encode())}..AA",
            "critical header extensions are not supported",
        ),
    ],
)
def test_malformed_tokens(token: str, phrase: str) -> None:
    with pytest.raises(jwtcheck.TokenRejected, match=phrase):
        jwtcheck.parse(token)


def test_signature_of_another_key_or_a_changed_payload_is_refused(
    rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    impostor = SigningKey.new(rsa_key.kid, "RS256")  # same kid, another key
    with pytest.raises(jwtcheck.TokenRejected, match="bad signature"):
        verify(mint(impostor, claims(ISSUER, AUDIENCE)), rsa_key)
    head, _, signature = mint(rsa_key, claims(ISSUER, AUDIENCE)).split(".")
    forged = b64url(json.dumps(claims(ISSUER, AUDIENCE, sub="mallory")).encode())
    with pytest.raises(jwtcheck.TokenRejected, match="bad signature"):
        verify(f"{head}.{forged}.{signature}", rsa_key)
    ec_impostor = SigningKey.new(ec_key.kid, "ES256")
    with pytest.raises(jwtcheck.TokenRejected, match="bad signature"):
        verify(mint(ec_impostor, claims(ISSUER, AUDIENCE)), ec_key)
    # An ES256 header on a token whose kid names the RSA key.
    mixed = mint(ec_key, claims(ISSUER, AUDIENCE), header={"kid": rsa_key.kid})
    with pytest.raises(jwtcheck.TokenRejected, match="is not a key for ES256"):
        verify(mixed, rsa_key)


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        ({"iss": "https://evil.example.com/realms/kvtrace"}, "wrong issuer"),
        ({"iss": ISSUER + "/"}, "wrong issuer"),
        ({"aud": "another-client"}, "wrong audience"),
        ({"aud": ["a", "b"]}, "wrong audience"),
        ({"exp": None}, "no exp"),
        ({"exp": "tomorrow"}, "exp is not a number"),
        ({"exp": True}, "exp is not a number"),
        ({"exp": 1_000_000 - 61}, "expired"),
        ({"nbf": 1_000_000 + 61}, "not valid yet"),
    ],
)
def test_claims_that_are_refused(changes: dict[str, Any], phrase: str) -> None:
    values = {"iss": ISSUER, "aud": AUDIENCE, "exp": 1_000_100, "nbf": 999_990, **changes}
    values = {key: value for key, value in values.items() if value is not None}
    with pytest.raises(jwtcheck.TokenRejected, match=phrase):
        jwtcheck.check_claims(values, issuer=ISSUER, audience=AUDIENCE, now=1_000_000, leeway_s=60)


def test_leeway_and_required_claim() -> None:
    def check(**values: Any) -> None:
        jwtcheck.check_claims(
            {"iss": ISSUER, "aud": AUDIENCE, **values},
            issuer=ISSUER,
            audience=AUDIENCE,
            now=1_000_000,
            leeway_s=60,
            required_claim=("groups", "trace-readers"),
        )

    check(
        exp=1_000_000 - 59, nbf=1_000_000 + 59, groups=["dev", "trace-readers"]
    )  # within the leeway
    check(exp=1_000_100, groups="trace-readers")
    for groups in (["dev"], "trace-readers-2", None, [["trace-readers"]]):
        with pytest.raises(
            jwtcheck.TokenRejected, match="claim groups does not hold the required value"
        ):
            check(exp=1_000_100, **({"groups": groups} if groups is not None else {}))


def test_key_set_keeps_only_usable_signing_keys(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    small = SigningKey.new("small", "RS256", rsa_bits=1024)
    document = {
        "keys": [
            rsa_key.jwk(),
            ec_key.jwk(),
            small.jwk(),
            {**rsa_key.jwk(), "kid": "enc", "use": "enc"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "broken"},
            "not a key",
        ]
    }
    assert sorted(k for k in jwtcheck.key_set(document) if k) == ["ec-1", "rsa-1"]
    without_kid = {key: value for key, value in ec_key.jwk().items() if key != "kid"}
    assert list(jwtcheck.key_set({"keys": [without_kid]})) == [None]
    assert jwtcheck.key_set({}) == {}


# ---- what crosses the proxy ------------------------------------------------------------------


def test_the_token_and_hop_by_hop_headers_never_reach_jaeger() -> None:
    given = [
        ("Host", "traces-jaeger-query:16686"),
        ("Authorization", "Bearer secret"),
        ("Accept", "application/json"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Content-Length", "0"),
        ("Accept-Encoding", "gzip"),
        ("x-tenant", "team-a"),
        ("Proxy-Authorization", "Basic x"),
        ("Upgrade", "h2c"),
    ]
    assert headers.request_headers(given) == [
        ("Accept", "application/json"),
        ("Accept-Encoding", "gzip"),
        ("x-tenant", "team-a"),
    ]


def test_jaegers_answer_keeps_its_length_and_encoding() -> None:
    given = [
        ("Content-Type", "application/json"),
        ("Content-Length", "42"),
        ("Content-Encoding", "gzip"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Vary", "Accept-Encoding"),
    ]
    assert headers.response_headers(given) == [
        ("Content-Type", "application/json"),
        ("Content-Length", "42"),
        ("Content-Encoding", "gzip"),
        ("Vary", "Accept-Encoding"),
    ]


def test_challenge_tells_the_reason_only_for_a_presented_token() -> None:
    assert (
        headers.challenge("jaeger-query", "no bearer token", False) == 'Bearer realm="jaeger-query"'
    )
    assert headers.challenge("jaeger-query", 'bad "quoted"\\ reason\n', True) == (
        'Bearer realm="jaeger-query", error="invalid_token", error_description="bad quoted reason"'
    )


def test_refusals_are_logged_within_a_budget() -> None:
    from kvtrace.queryproxy.server import LogBudget

    budget = LogBudget(burst=3, window_s=60)
    assert [budget.take(100 + i) for i in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    assert budget.take(159) == (False, 0)  # same window
    assert budget.take(160) == (True, 3)  # a new window tells how many were left out
    assert budget.take(161) == (True, 0)
