"""Benchmark: server CPU per request of the KV node's own HTTP/1.1 server against aiohttp's.

    .venv/bin/python benchmarks/http_server.py [--requests 30000] [--clients 8] [--rounds 3]
        [--out benchmarks/results/http-server-own-vs-aiohttp.json]

docs/kvnode.md keeps the node's own server (kvnode/transport/http_server.py) for the client
port because aiohttp's cost several times more CPU per request. This measures it: each server
runs alone in its own process on 127.0.0.1 with uvloop (as the node does), answering every
``GET /v1/kv/{key}`` with a 5-byte value and an ``X-KV-Version`` header (no storage, no
replication: only the HTTP path). The load comes from another process, over ``--clients``
keep-alive connections of the node's own client (``kvtrace bench``'s). The servers alternate
for ``--rounds`` rounds, so both see the same machine load; the server process's CPU time
(user + system, /proc) per request is reported, median of the rounds. Prints a JSON document
and a table. Not a test: it only reports. Bounded: at most 200,000 requests a round, 60 s a
round, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SERVERS = ("own", "aiohttp")
VALUE = b"value"
MAX_REQUESTS = 200_000
ROUND_TIMEOUT_S = 60.0


# ---- the server process ----------------------------------------------------------------------


def serve_own(port: int) -> None:
    from kvnode.transport.http_server import HttpServer, Reply, Request

    async def handler(request: Request) -> Reply:
        return Reply(200, VALUE, "application/octet-stream", (("X-KV-Version", "1"),))

    async def main() -> None:
        server = HttpServer(handler, max_body=1 << 20)
        loop = asyncio.get_running_loop()
        await loop.create_server(server.protocol, "127.0.0.1", port)
        print("ready", flush=True)
        await asyncio.Event().wait()

    run(main())


def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=VALUE, content_type="application/octet-stream", headers={"X-KV-Version": "1"}
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/kv/{key}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    run(main())


def run(main: Any) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


# ---- the driver --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, requests: int, clients: int) -> int:
    from kvnode.client import Connection

    left = iter(range(requests))
    done = 0

    async def client(n: int) -> None:
        nonlocal done
        conn = Connection(f"http://127.0.0.1:{port}", timeout=10.0)
        try:
            for i in left:
                response = await conn.request("GET", f"/v1/kv/bench-{i % 1000}")
                if response.status != 200:
                    raise RuntimeError(f"unexpected status {response.status}")
                done += 1
        finally:
            conn.close()

    async with asyncio.timeout(ROUND_TIMEOUT_S):
        await asyncio.gather(*(client(n) for n in range(clients)))
    return done


def one_round(kind: str, requests: int, clients: int) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", "--server", kind, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} server did not start")
        asyncio.run(load(port, 200, clients))  # connections and caches warm
        before, started = cpu_seconds(proc.pid), time.perf_counter()
        done = asyncio.run(load(port, requests, clients))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {
        "requests": done,
        "seconds": round(elapsed, 3),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_request": round(cpu / done * 1e6, 2),
        "requests_per_s": round(done / elapsed, 1),
    }


def measure(requests: int, clients: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in SERVERS}
    for index in range(rounds):
        for kind in SERVERS if index % 2 == 0 else reversed(SERVERS):
            runs[kind].append(one_round(kind, requests, clients))
    median = {
        kind: statistics.median(r["server_cpu_us_per_request"] for r in runs[kind])
        for kind in SERVERS
    }
    return {
        "benchmark": "http_server",
        "requests_per_round": requests,
        "clients": clients,
        "rounds": rounds,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "median_server_cpu_us_per_request": median,
        "aiohttp_over_own": round(median["aiohttp"] / median["own"], 2),
        "runs": runs,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{'server':<10} {'CPU µs/request (median)':>24} {'requests/s (rounds)':>30}",
        "-" * 66,
    ]
    for kind in SERVERS:
        rates = ", ".join(f"{r['requests_per_s']:,.0f}" for r in result["runs"][kind])
        lines.append(
            f"{kind:<10} {result['median_server_cpu_us_per_request'][kind]:>24.1f} {rates:>30}"
        )
    lines.append(f"aiohttp / own: x{result['aiohttp_over_own']}")
    return "\n".join(lines)


def positive(limit: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"expected 1..{limit}, got {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="(internal) run one server")
    serve.add_argument("--server", choices=SERVERS, required=True)
    serve.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--requests", type=positive(MAX_REQUESTS), default=30_000, help="per round (default 30000)"
    )
    parser.add_argument(
        "--clients", type=positive(256), default=8, help="keep-alive connections (default 8)"
    )
    parser.add_argument(
        "--rounds", type=positive(9), default=3, help="rounds per server (default 3)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.command == "serve":
        (serve_own if args.server == "own" else serve_aiohttp)(args.port)
        return 0
    result = measure(args.requests, args.clients, args.rounds)
    text = json.dumps(result, indent=1)
    print(text)
    print(table(result))
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
