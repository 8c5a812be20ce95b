"""URL parameters of the inspection commands: checked (one line naming the parameter when
malformed), then resolved through the development endpoint map (a no-op in production).

Imports only the stdlib, :mod:`kvtrace.inspect.errors` and :mod:`kvtrace.shared`; never the
command modules (cli, doctor), which both use it.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from kvtrace.inspect.errors import InspectError
from kvtrace.shared.endpoints import resolve_url

JAEGER_ENV = "KVTRACE_JAEGER_URL"


def check_url(url: str, parameter: str) -> None:
    """Raise an InspectError naming ``parameter`` unless ``url`` is an http(s) URL with a host."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise InspectError(
            f"{parameter}: expected an http(s) URL such as http://localhost:16686, got {url!r}"
        )


def checked_url(url: str, parameter: str) -> str:
    """``url`` checked, then resolved through the endpoint map."""
    check_url(url, parameter)
    return resolve_url(url)


def jaeger_url(value: str | None) -> str:
    """Jaeger's query URL from ``--jaeger``, else ``$KVTRACE_JAEGER_URL``."""
    url = value or os.environ.get(JAEGER_ENV)
    if not url:
        raise InspectError(
            f"--jaeger: give Jaeger's query URL (e.g. http://localhost:16686) or set {JAEGER_ENV}"
        )
    return checked_url(url, "--jaeger")
