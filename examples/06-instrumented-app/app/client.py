"""A small client of the KV store: writes and reads one key after another, forever, at a slow
pace. It knows nothing of OpenTelemetry: the injected Python agent (PYTHONPATH from the init
container) instruments urllib, so each request is a CLIENT span whose W3C traceparent the KV
coordinator continues. Standard library only.

Environment: KV_URL (default http://store:7070), INTERVAL seconds between operations (default
0.5), KVTRACE_KV_CA_FILE and KVTRACE_KV_TOKEN when the store's client port asks for TLS and a
token (the same variables as `kvtrace kv`)."""

import itertools
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

URL = os.environ.get("KV_URL", "http://store:7070").rstrip("/")
INTERVAL = float(os.environ.get("INTERVAL", "0.5"))
CA_FILE = os.environ.get("KVTRACE_KV_CA_FILE")
TOKEN = os.environ.get("KVTRACE_KV_TOKEN")
CONTEXT = ssl.create_default_context(cafile=CA_FILE) if CA_FILE else None


def call(method: str, key: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(f"{URL}/v1/kv/{key}", data=body, method=method)
    if TOKEN:
        request.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=CONTEXT) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError as exc:
        print(f"{method} {key}: {exc}", file=sys.stderr, flush=True)
        return 0


def main() -> None:
    for n in itertools.count():
        key = f"app/order-{n % 100}"
        written = call("PUT", key, f"order {n}".encode())
        read = call("GET", key)
        print(f"PUT {key} -> {written}, GET -> {read}", flush=True)
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
