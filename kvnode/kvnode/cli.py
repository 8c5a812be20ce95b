"""`kvtrace node serve`, `kvtrace kv get|put|delete` and `kvtrace bench`.

Registering parsers imports only the option table; each command imports what it needs when
it runs (uvloop, OpenTelemetry, SQLite), keeping `kvtrace --help` fast everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from kvnode.process.config import OPTIONS

DEFAULT_ENDPOINT = "http://127.0.0.1:7070"


def register(subparsers: Any) -> None:
    _register_node(subparsers)
    _register_kv(subparsers)
    _register_bench(subparsers)


def _register_node(subparsers: Any) -> None:
    node = subparsers.add_parser("node", help="run a KV node", description="Run a kvtrace KV node.")
    node_sub = node.add_subparsers(dest="node_command", required=True, metavar="COMMAND")
    serve = node_sub.add_parser(
        "serve",
        help="serve the client API (7070) and the peer protocol (7071)",
        description="Serve one replicated, durable KV node. Every flag has a matching KVNODE_* "
        "environment variable (the flag wins). Tracing is configured only by the standard OTEL_* "
        "variables: run under `opentelemetry-instrument`.",
    )
    for opt in OPTIONS:
        serve.add_argument(
            opt.flag,
            dest=opt.dest,
            default=None,
            metavar=opt.metavar,
            help=f"{opt.help} (env {opt.env}; default: {opt.default or 'none'})",
        )
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from kvnode.process.config import ConfigError, raw_values, resolve
    from kvnode.process.node import read_peers_file, serve

    flags = vars(args)
    peers_file = raw_values(flags, os.environ)["peers_file"]
    text = read_peers_file(peers_file) if peers_file else None
    try:
        config = resolve(flags, os.environ, text)
    except ConfigError as exc:
        print(f"kvtrace node serve: {exc}", file=sys.stderr)
        return 2
    return serve(config)


def _add_security(p: argparse.ArgumentParser) -> None:
    """The CA bundle, token and server name of a secured cluster (kvnode.client.Security)."""
    p.add_argument(
        "--ca-file",
        default=None,
        help="CA bundle that verifies https endpoints (env KVTRACE_KV_CA_FILE; default: the system's)",
    )
    p.add_argument(
        "--token-file",
        default=None,
        help="file holding the bearer token (env KVTRACE_KV_TOKEN_FILE, or the token itself in "
        "KVTRACE_KV_TOKEN)",
    )
    p.add_argument(
        "--server-name",
        default=None,
        help="name the node's certificate must carry, when the endpoint's host is another "
        "(env KVTRACE_KV_SERVER_NAME)",
    )


def _security(args: argparse.Namespace) -> Any:
    from kvnode.client import security_from

    return security_from(args.ca_file, args.token_file, args.server_name)


def _register_kv(subparsers: Any) -> None:
    kv = subparsers.add_parser(
        "kv", help="read and write keys", description="A client for the KV HTTP API."
    )
    kv_sub = kv.add_subparsers(dest="kv_command", required=True, metavar="COMMAND")
    for name, doc in (
        ("get", "print a key's value"),
        ("put", "write a key"),
        ("delete", "delete a key"),
    ):
        p = kv_sub.add_parser(name, help=doc, description=doc)
        p.add_argument(
            "--endpoint",
            default=os.environ.get("KVTRACE_ENDPOINT", DEFAULT_ENDPOINT),
            help="a node's client URL (env KVTRACE_ENDPOINT; default %(default)s)",
        )
        p.add_argument(
            "--consistency",
            choices=("one", "quorum", "all"),
            default=None,
            help="consistency level (default: the node's)",
        )
        p.add_argument("--timeout", type=float, default=10.0, help="seconds (default %(default)s)")
        _add_security(p)
        p.add_argument("key")
        if name == "put":
            p.add_argument("value", help="the value; '-' reads it from standard input")
        p.set_defaults(func=_kv, kv_op=name)


def _kv(args: argparse.Namespace) -> int:
    import asyncio

    from kvnode.client import ClientError, KVClient

    try:
        security = _security(args)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        client = KVClient(args.endpoint, args.timeout, security)
        try:
            if args.kv_op == "put":
                value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
                resp = await client.put(args.key, value, args.consistency)
            elif args.kv_op == "get":
                resp = await client.get(args.key, args.consistency)
            else:
                resp = await client.delete(args.key, args.consistency)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            client.close()
        if resp.status >= 300:
            print(resp.body.decode(errors="replace"), file=sys.stderr)
            return 1
        if args.kv_op == "get":
            sys.stdout.buffer.write(resp.body)
            sys.stdout.flush()
        else:
            print(json.dumps({"version": resp.version}))
        return 0

    return asyncio.run(go())


def _register_bench(subparsers: Any) -> None:
    b = subparsers.add_parser(
        "bench",
        help="load generator (ops/s, p50/p95/p99)",
        description="Drive load against kvtrace nodes (or etcd's JSON gateway) and print ops/s and "
        "latency percentiles as JSON and a short table. Bounded in op count and time; progress "
        "goes to standard error while it runs.",
    )
    b.add_argument(
        "--endpoint",
        action="append",
        dest="endpoints",
        metavar="URL",
        help="client URL of a node, e.g. http://127.0.0.1:7070; repeat for several, clients "
        f"are spread round-robin (default: $KVTRACE_ENDPOINT, else {DEFAULT_ENDPOINT})",
    )
    b.add_argument(
        "--clients",
        type=int,
        default=32,
        metavar="N",
        help="concurrent clients, each with its own keep-alive connection (1..4096; default: 32)",
    )
    b.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="stop after this long (at most 600; default: 10)",
    )
    b.add_argument(
        "--ops",
        type=int,
        default=0,
        metavar="N",
        help="stop after this many operations, if sooner than --duration (default: 0, no count)",
    )
    b.add_argument(
        "--write-ratio",
        type=float,
        default=0.5,
        metavar="R",
        help="fraction of operations that are writes, the rest reads (0..1; default: 0.5)",
    )
    b.add_argument(
        "--keys",
        type=int,
        default=10_000,
        metavar="N",
        help="size of the key space the operations pick from (default: 10000)",
    )
    b.add_argument(
        "--distribution",
        choices=("uniform", "zipfian"),
        default="uniform",
        help="how keys are picked: uniform, or zipfian (a few hot keys; default: uniform)",
    )
    b.add_argument(
        "--zipf-s",
        type=float,
        default=0.99,
        metavar="S",
        help="exponent of the zipfian distribution (default: 0.99)",
    )
    b.add_argument(
        "--value-size",
        type=int,
        default=100,
        metavar="BYTES",
        help="size of each written value (default: 100)",
    )
    b.add_argument(
        "--consistency",
        choices=("one", "quorum", "all"),
        default="quorum",
        help="consistency level of every request (kvtrace only; default: quorum)",
    )
    b.add_argument(
        "--target",
        choices=("kvtrace", "etcd"),
        default="kvtrace",
        help="what the endpoints are: kvtrace nodes, or etcd's JSON gateway (default: kvtrace)",
    )
    b.add_argument(
        "--key-prefix",
        default="bench/",
        metavar="PREFIX",
        help="prefix of every key, to keep the load apart from other data (default: bench/)",
    )
    b.add_argument(
        "--preload",
        action="store_true",
        help="write every key once before measuring, so reads find values",
    )
    b.add_argument(
        "--json-only",
        action="store_true",
        help="print only the JSON line, no table and no progress",
    )
    _add_security(b)
    b.set_defaults(func=_bench)


def _progress_printer(stream: TextIO) -> Callable[[float, float, int, int], None]:
    """Progress lines for standard error: rewritten in place on a terminal, one every 5 s
    otherwise (a log keeps them readable)."""
    live = stream.isatty()
    last = [0.0]

    def show(elapsed: float, duration: float, ops: int, errors: int) -> None:
        if not live and elapsed - last[0] < 5.0:
            return
        last[0] = elapsed
        rate = ops / elapsed if elapsed > 0 else 0.0
        line = (
            f"kvtrace bench: {elapsed:5.1f}/{duration:g} s, {ops:,} operations "
            f"({rate:,.0f}/s), {errors:,} errors"
        )
        stream.write(f"\r{line}\033[K" if live else line + "\n")
        stream.flush()

    return show


def _bench(args: argparse.Namespace) -> int:
    from kvnode.bench import BenchConfig, run_sync, table
    from kvnode.client import ClientError

    try:
        security = _security(args)
    except ClientError as exc:
        print(f"kvtrace bench: {exc}", file=sys.stderr)
        return 2
    cfg = BenchConfig(
        endpoints=args.endpoints or [os.environ.get("KVTRACE_ENDPOINT", DEFAULT_ENDPOINT)],
        clients=args.clients,
        duration=args.duration,
        ops=args.ops,
        write_ratio=args.write_ratio,
        keys=args.keys,
        distribution=args.distribution,
        zipf_s=args.zipf_s,
        value_size=args.value_size,
        consistency=args.consistency,
        target=args.target,
        key_prefix=args.key_prefix,
        preload=args.preload,
        security=security,
    )
    progress = None if args.json_only else _progress_printer(sys.stderr)
    try:
        result = run_sync(cfg, progress=progress)
    except ValueError as exc:
        print(f"kvtrace bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if progress is not None and sys.stderr.isatty():
            sys.stderr.write("\n")
    print(json.dumps(result.as_dict()))
    if not args.json_only:
        print(table([(f"{cfg.target} w={cfg.write_ratio:g} {cfg.consistency}", result)]))
    return 0 if result.ops else 1
