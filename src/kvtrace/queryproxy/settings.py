"""What the proxy is told by its flags, checked (pure: no I/O).

Bad flags raise :class:`SettingsError` naming the flag and what was expected; the operator
renders the flags from ``spec.jaeger.query.auth`` after checking the same things there, so a
pod never starts with settings this module would refuse.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from urllib.parse import urlsplit

MODES = ("bearer", "oidc")


class SettingsError(ValueError):
    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


@dataclasses.dataclass(frozen=True)
class OidcSettings:
    issuer: str
    audience: str
    required_claim: tuple[str, str] | None = None
    ca_file: str | None = None
    leeway_s: int = 60  # clock skew allowed on exp and nbf
    min_refresh_s: float = 10.0  # at most one JWKS fetch per this many seconds for unknown kids
    max_age_s: float = 3600.0  # keys older than this are fetched again at the next request


@dataclasses.dataclass(frozen=True)
class ProxySettings:
    mode: str
    listen_host: str
    listen_port: int
    upstream: str
    tokens_file: str | None = None
    oidc: OidcSettings | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    reload_interval_s: float = 1.0  # how often the tokens file and the certificate are checked
    realm: str = "jaeger-query"


def host_port(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) → (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(flag, f"expected HOST:PORT (e.g. 0.0.0.0:16686), got {text!r}")
    return host, int(port)


def _upstream(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise SettingsError(
            "--upstream", f"expected http://HOST:PORT of Jaeger's query HTTP server, got {text!r}"
        )
    return text.rstrip("/")


def issuer_url(text: str, flag: str) -> str:
    """An OIDC issuer: https, a host, no query or fragment (OpenID Connect Discovery 1.0)."""
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(
            flag,
            f"expected an https URL without query or fragment (the issuer's iss), got {text!r}",
        )
    return text


def claim(text: str, flag: str) -> tuple[str, str]:
    """``NAME=VALUE``: the token must carry claim NAME equal to VALUE (or a list holding it)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value:
        raise SettingsError(flag, f"expected NAME=VALUE (e.g. groups=trace-readers), got {text!r}")
    return name.strip(), value


def _seconds(value: float, flag: str, minimum: float) -> float:
    if value < minimum:
        raise SettingsError(flag, f"expected at least {minimum:g} seconds, got {value:g}")
    return value


def from_flags(
    *,
    mode: str,
    listen: str,
    upstream: str,
    tokens_file: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    required_claim: str | None = None,
    oidc_ca_file: str | None = None,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
    leeway_s: int = 60,
    jwks_min_refresh_s: float = 10.0,
    reload_interval_s: float = 1.0,
) -> ProxySettings:
    if mode not in MODES:
        raise SettingsError("--mode", f"expected one of {', '.join(MODES)}, got {mode!r}")
    listen_host, listen_port = host_port(listen, "--listen")
    if mode == "bearer" and not tokens_file:
        raise SettingsError(
            "--tokens-file", "required with --mode bearer: a file with one token per line"
        )
    oidc = None
    if mode == "oidc":
        if not issuer:
            raise SettingsError(
                "--issuer", "required with --mode oidc: the https URL of the OIDC issuer"
            )
        if not audience:
            raise SettingsError(
                "--audience", "required with --mode oidc: the client id tokens must be issued for"
            )
        oidc = OidcSettings(
            issuer=issuer_url(issuer, "--issuer"),
            audience=audience,
            required_claim=claim(required_claim, "--required-claim") if required_claim else None,
            ca_file=oidc_ca_file,
            leeway_s=int(_seconds(leeway_s, "--leeway", 0)),
            min_refresh_s=_seconds(jwks_min_refresh_s, "--jwks-min-refresh", 0),
        )
    else:
        for flag, value in (
            ("--issuer", issuer),
            ("--audience", audience),
            ("--required-claim", required_claim),
            ("--oidc-ca-file", oidc_ca_file),
        ):
            if value:
                raise SettingsError(flag, "only used with --mode oidc")
    if bool(tls_cert_file) != bool(tls_key_file):
        raise SettingsError(
            "--tls-cert-file" if not tls_cert_file else "--tls-key-file",
            "--tls-cert-file and --tls-key-file go together (the serving certificate and its key)",
        )
    return ProxySettings(
        mode=mode,
        listen_host=listen_host,
        listen_port=listen_port,
        upstream=_upstream(upstream),
        tokens_file=tokens_file,
        oidc=oidc,
        tls_cert_file=tls_cert_file,
        tls_key_file=tls_key_file,
        reload_interval_s=_seconds(reload_interval_s, "--reload-interval", 0.1),
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
