"""``kvtrace query-proxy``: registered by kvtrace.cli; imports aiohttp only when it runs."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

EXIT_ERROR = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "query-proxy",
        help="authenticating reverse proxy in front of Jaeger's query API (bearer tokens, OIDC)",
        description="Serves Jaeger's query API (UI and /api/v3) on --listen and forwards only requests "
        "carrying a valid 'Authorization: Bearer TOKEN' to Jaeger's query server at --upstream (which "
        "should listen on loopback only). Mode bearer: the token is one of --tokens-file (re-read when it "
        "changes). Mode oidc: a JWT (RS256/ES256) signed by the --issuer's keys (OIDC discovery, JWKS) for "
        "--audience, not expired, or a token of --tokens-file. Everything else gets 401. The operator runs "
        "it as a sidecar of Jaeger (spec.jaeger.query.auth.mode bearer|oidc).",
    )
    parser.add_argument(
        "--mode", required=True, choices=("bearer", "oidc"), help="how tokens are checked"
    )
    parser.add_argument(
        "--listen",
        default="0.0.0.0:16686",
        metavar="HOST:PORT",
        help="address to serve on (default: 0.0.0.0:16686)",
    )
    parser.add_argument(
        "--upstream",
        default="http://127.0.0.1:16687",
        metavar="URL",
        help="Jaeger's query HTTP server (default: http://127.0.0.1:16687)",
    )
    parser.add_argument(
        "--tokens-file",
        default=None,
        metavar="PATH",
        help="static tokens, one per line (required with --mode bearer; with oidc: accepted too)",
    )
    parser.add_argument(
        "--issuer", default=None, metavar="URL", help="OIDC issuer (https), exactly the tokens' iss"
    )
    parser.add_argument(
        "--audience", default=None, help="OIDC: the aud tokens must carry (the client id)"
    )
    parser.add_argument(
        "--required-claim",
        default=None,
        metavar="NAME=VALUE",
        help="OIDC: a claim tokens must carry, equal to VALUE or a list containing it",
    )
    parser.add_argument(
        "--oidc-ca-file",
        default=None,
        metavar="PATH",
        help="OIDC: CA bundle that signed the issuer's certificate (default: the system's)",
    )
    parser.add_argument(
        "--jwks-min-refresh",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="OIDC: at most one key refetch per this many seconds for unknown key ids (default: 10)",
    )
    parser.add_argument(
        "--leeway",
        type=int,
        default=60,
        metavar="SECONDS",
        help="OIDC: clock skew allowed on exp and nbf (default: 60)",
    )
    parser.add_argument(
        "--tls-cert-file", default=None, metavar="PATH", help="serve TLS with this certificate"
    )
    parser.add_argument("--tls-key-file", default=None, metavar="PATH", help="... and this key")
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often the tokens file and the certificate are checked for changes (default: 1)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from kvtrace.queryproxy.settings import SettingsError, from_flags

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = from_flags(
            mode=args.mode,
            listen=args.listen,
            upstream=args.upstream,
            tokens_file=args.tokens_file,
            issuer=args.issuer,
            audience=args.audience,
            required_claim=args.required_claim,
            oidc_ca_file=args.oidc_ca_file,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file,
            leeway_s=args.leeway,
            jwks_min_refresh_s=args.jwks_min_refresh,
            reload_interval_s=args.reload_interval,
        )
        from kvtrace.queryproxy.server import run

        run(settings)
    except SettingsError as exc:
        print(f"kvtrace query-proxy: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # tokens file, certificate, or the listen address
        print(f"kvtrace query-proxy: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return 0
