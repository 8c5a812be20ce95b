"""Benchmark: a 3-node kvtrace cluster (tracing off / head 0.1 / every span) against etcd.

    .venv/bin/python benchmarks/kv.py [--duration 5] [--clients 32,128] [--keys 2000]
        [--rounds 3] [--tracing off,head-0.1,all-spans] [--secure off] [--etcd-paths json,grpc]
        [--pure off] [--loadgen python,go] [--baseline DIR]

`--secure` names tracing configurations that also run a second time with the KV cluster's
transport security on (TLS on both ports, mutual between peers, and a bearer token per
request: what the operator renders by default), so the cost of TLS per operation shows as
"tls / plain" ratios of throughput and server CPU per operation. `--pure` names tracing
configurations that also run with the node's pure-Python hot path (`KVNODE_PURE_PYTHON=1`,
docs/kvnode.md) beside the compiled one, in the same rounds: the "pure / compiled" A/B.
`--baseline DIR` (a source tree of another commit: `git worktree add --detach DIR COMMIT`;
repeatable) adds an untraced cluster running DIR's node code ("kvtrace tracing=off baseline
DIRNAME"), pure Python as DIR has no compiled modules, beside "kvtrace tracing=off pure" (this
tree's code, pure too) in the same rounds: the A/B of a change to the node.

Each configuration runs three fresh `kvtrace node serve` processes on 127.0.x.y under
`opentelemetry-instrument` (traces go to a local OTLP/HTTP sink that discards them). If an
etcd binary is found (the local stack's ~/.cache/kvtrace/tools/etcd-3.6.16/etcd, or `etcd` on
PATH) a 3-member etcd cluster joins, measured through two paths: its JSON gateway and its own
gRPC API with etcd's official Go client (etcd's best figure). Two load generators (`--loadgen`)
drive kvtrace and the JSON gateway: `python` (`kvtrace bench`'s, ~30-37 µs of CPU per
operation: what an application using the Python client sees) and `go` (benchmarks/etcdload's
HTTP mode, ~16-24 µs per operation, so that it takes less of the cores from the servers;
the same program drives etcd's gRPC path; built once into the tool cache). Systems measured by
the Go generator are named "... (Go client)". All systems are started and preloaded first; then QUORUM writes and QUORUM reads (etcd: puts and
linearizable ranges; 100-byte values) at each `--clients` count run round-robin over them
`--rounds` times, so that each sees the same mix of machine load, and the median round is
reported; last, 1 client each for the unloaded latency. Prints a JSON document and tables with
the ratios traced/untraced and kvtrace/etcd, the servers' CPU per operation and the load
generator's CPU. Not a test: it only reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvnode.bench import BenchConfig, Result, run_sync, table
from kvnode.client import Security

BIN = Path(sys.executable).parent
ETCD_CANDIDATES = [Path.home() / ".cache/kvtrace/tools/etcd-3.6.16/etcd"]
TRACING = {
    "off": {"OTEL_SDK_DISABLED": "true"},
    "head-0.1": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "all-spans": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, timeout: float = 30, ok: Any = lambda body: True, context: Any = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                if resp.status == 200 and ok(resp.read()):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


SINK = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class Sink:
    """An OTLP/HTTP endpoint that accepts and discards spans, in its own process so it
    does not steal the load generator's interpreter."""

    def __init__(self) -> None:
        self.port = free_port("127.0.0.1")
        self.proc = subprocess.Popen([sys.executable, "-c", SINK, str(self.port)])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def secure_files(root: Path, ips: list[str]) -> tuple[dict[str, str], Security]:
    """A CA, one leaf for the three members (their addresses) and one client token, as the
    operator's managed mode makes them: the nodes' KVNODE_* settings and the client's."""
    import datetime
    import secrets

    from kvtrace_operator import pki

    now = datetime.datetime.now(datetime.UTC)
    ca = pki.make_ca("bench CA", now, datetime.timedelta(days=1))
    leaf = pki.issue(
        ca, "kv", ["kv.bench"], now, datetime.timedelta(days=1), ip_addresses=tuple(ips)
    )
    tokens = root / "tokens"
    tokens.mkdir()
    token = secrets.token_urlsafe(32)
    (tokens / "default").write_text(token)
    for name, text in (
        ("tls.crt", leaf.cert_pem),
        ("tls.key", leaf.key_pem),
        ("ca.crt", ca.cert_pem),
    ):
        (root / name).write_text(text)
    env = {
        "KVNODE_TLS_CERT_FILE": str(root / "tls.crt"),
        "KVNODE_TLS_KEY_FILE": str(root / "tls.key"),
        "KVNODE_TLS_CA_FILE": str(root / "ca.crt"),
        "KVNODE_AUTH_TOKEN_DIR": str(tokens),
    }
    return env, Security(ca_file=str(root / "ca.crt"), token=token)


def start_kvtrace(
    root: Path,
    subnet: int,
    tracing: dict[str, str],
    sink: Sink,
    secure: bool = False,
    pure: bool = False,
    source: Path | None = None,
) -> tuple[list[subprocess.Popen[bytes]], list[str], Security]:
    """Three nodes on 127.0.SUBNET.2-4; ``source``: run the node code of that source tree
    (another commit's checkout, pure Python) instead of this one's."""
    ips = [f"127.0.{subnet}.{i + 2}" for i in range(3)]
    security_env, security = secure_files(root, ips) if secure else ({}, Security())
    ports = [(free_port(ip), free_port(ip)) for ip in ips]
    peers = ",".join(f"kv-{i}={ip}:{pp}" for i, (ip, (_, pp)) in enumerate(zip(ips, ports)))
    procs = []
    for i, (ip, (cp, pp)) in enumerate(zip(ips, ports)):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KVNODE_"))}
        env.update(
            {
                "OTEL_SERVICE_NAME": "kvnode",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}",
                "OTEL_BSP_MAX_QUEUE_SIZE": "65536",
                "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id=kv-{i}",
                **tracing,
                "KVNODE_ID": f"kv-{i}",
                "KVNODE_CLIENT_ADDR": f"{ip}:{cp}",
                "KVNODE_PEER_ADDR": f"{ip}:{pp}",
                "KVNODE_PEERS": peers,
                "KVNODE_DATA_DIR": str(root / f"kv-{i}"),
                "KVNODE_LOG_LEVEL": "warning",
                "KVNODE_PURE_PYTHON": "1" if pure or source is not None else "0",
                **security_env,
            }
        )
        if source is not None:  # its packages first on the path, before this tree's
            env["PYTHONPATH"] = os.pathsep.join(str(source / d) for d in ("kvnode", "src"))
        cmd = [str(BIN / "opentelemetry-instrument"), str(BIN / "kvtrace"), "node", "serve"]
        log = open(root / f"kv-{i}.log", "wb")  # noqa: SIM115 - the child's, for its lifetime
        # cwd: the node's own directory. From the repository's root, where opentelemetry-instrument
        # puts the working directory on sys.path, the kvnode/ source root would be imported as a
        # namespace package and KVNODE_PURE_PYTHON (kvnode/__init__.py) would never take effect.
        procs.append(subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT))
    endpoints = [f"{'https' if secure else 'http'}://{ip}:{cp}" for ip, (cp, _) in zip(ips, ports)]
    for url in endpoints:
        wait_http(url + "/readyz", context=security.context() if secure else None)
    return procs, endpoints, security


def find_etcd() -> str | None:
    for path in ETCD_CANDIDATES:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("etcd")


def start_etcd(
    binary: str, root: Path, subnet: int
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    ips = [f"127.0.{subnet}.{i + 2}" for i in range(3)]
    ports = [(free_port(ip), free_port(ip)) for ip in ips]
    initial = ",".join(f"e{i}=http://{ip}:{pp}" for i, (ip, (_, pp)) in enumerate(zip(ips, ports)))
    procs = []
    for i, (ip, (cp, pp)) in enumerate(zip(ips, ports)):
        cmd = [
            binary,
            "--name",
            f"e{i}",
            "--data-dir",
            str(root / f"etcd-{i}"),
            "--listen-client-urls",
            f"http://{ip}:{cp}",
            "--advertise-client-urls",
            f"http://{ip}:{cp}",
            "--listen-peer-urls",
            f"http://{ip}:{pp}",
            "--initial-advertise-peer-urls",
            f"http://{ip}:{pp}",
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "bench",
            "--log-level",
            "error",
        ]
        log = open(root / f"etcd-{i}.log", "wb")  # noqa: SIM115 - the child's, for its lifetime
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    endpoints = [f"http://{ip}:{cp}" for ip, (cp, _) in zip(ips, ports)]
    for url in endpoints:
        wait_http(url + "/health", ok=lambda body: b'"true"' in body)
    return procs, endpoints


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _ticks(stat_path: str) -> int:
    """utime + stime of a /proc stat file (0 once the process is gone)."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(procs: list[subprocess.Popen[bytes]], main_thread_only: bool = False) -> float:
    """User + system CPU of the server processes, from /proc: every thread, or only the main
    thread (a kvtrace node's event loop; the rest is its writer and scan threads)."""
    path = "/proc/{pid}/task/{pid}/stat" if main_thread_only else "/proc/{pid}/stat"
    return sum(_ticks(path.format(pid=p.pid)) for p in procs) / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU of this process (the Python load generator), or with
    ``resource.RUSAGE_CHILDREN`` of its finished children (the Go load generator)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


LOADED = (("writes", {"write_ratio": 1.0}), ("reads", {"write_ratio": 0.0}))
PLAIN = Security()  # no TLS, no token
UNLOADED = (
    ("unloaded_writes", {"write_ratio": 1.0, "clients": 1}),
    ("unloaded_reads", {"write_ratio": 0.0, "clients": 1}),
)
MAX_CLIENTS = 4096  # kvnode.bench.BenchConfig's and etcdload's limit
ETCD_PATHS = {"json": "etcd (JSON gateway)", "grpc": "etcd (gRPC, Go client)"}
GO_CLIENT = " (Go client)"  # the suffix of a system measured by etcdload's HTTP mode
ETCD_JSON_GO = "etcd (JSON gateway, Go client)"
ETCD_SYSTEMS = (*ETCD_PATHS.values(), ETCD_JSON_GO)
LOADGENS = ("python", "go")
# Printed beside every comparison with etcd, and kept in the JSON.
WHAT_DIFFERS = (
    "What differs: etcd is linearizable (Raft: one leader orders every write, and a "
    "linearizable range confirms leadership with a quorum round); kvtrace is a Dynamo-style "
    "quorum store (leaderless, N=3, R=W=2, HLC last-writer-wins, no total order), so a QUORUM "
    "write needs two durable replicas and no leader. Same machine, same 3 members, same "
    "100-byte values and key space."
)


def parse_clients(text: str) -> list[int]:
    """``--clients``: one client count or a comma list (``32,128``), each within 1..4096 and
    each once; the loaded phases run at every count."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and 1 <= int(part) <= MAX_CLIENTS for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected client counts within 1..{MAX_CLIENTS}, comma-separated (32,128), "
            f"got {text!r}"
        )
    counts = [int(part) for part in parts]
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"expected each client count once, got {text!r}")
    return counts


def parse_etcd_paths(text: str) -> list[str]:
    """``--etcd-paths``: a comma list of ``json`` and ``grpc`` ('' for neither)."""
    paths = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [p for p in paths if p not in ETCD_PATHS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(ETCD_PATHS)}, got {text!r}"
        )
    return list(dict.fromkeys(paths))


def parse_loadgens(text: str) -> list[str]:
    """``--loadgen``: a non-empty comma list of ``python`` and ``go``."""
    gens = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not gens or any(g not in LOADGENS for g in gens):
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(LOADGENS)} (at least one), got {text!r}"
        )
    return gens


def baseline_tree(text: str) -> Path:
    """``--baseline``: a kvtrace source tree (it holds kvnode/kvnode and src/kvtrace)."""
    tree = Path(text).resolve()
    if not (tree / "kvnode" / "kvnode").is_dir() or not (tree / "src" / "kvtrace").is_dir():
        raise argparse.ArgumentTypeError(
            f"expected a kvtrace source tree (with kvnode/kvnode and src/kvtrace), got {text!r}"
        )
    return tree


def client_counts(args: argparse.Namespace) -> list[int]:
    """The run's client counts (benchmarks/tracing_overhead.py passes one int)."""
    return list(args.clients) if isinstance(args.clients, list) else [args.clients]


def phase_key(phase: str, clients: int, counts: Sequence[int]) -> str:
    """A loaded phase's name in the report: ``writes`` when the run has one client count,
    ``writes@128`` when it has several."""
    return phase if len(counts) == 1 else f"{phase}@{clients}"


def etcdload_command(binary: Path, cfg: BenchConfig, api: str = "grpc") -> list[str]:
    """The Go load generator's command line for the same workload as ``cfg`` over ``api``
    (``grpc`` or ``etcd-json`` for etcd, ``kvtrace`` with ``cfg.consistency``)."""
    if cfg.distribution != "uniform" or cfg.ops:
        raise ValueError("etcdload runs uniform keys until the duration (no zipfian, no --ops)")
    if cfg.security != PLAIN or any(e.startswith("https:") for e in cfg.endpoints):
        raise ValueError("etcdload speaks plain HTTP: no TLS, no token")
    cmd = [str(binary), "-api", api]
    if api == "kvtrace":
        cmd += ["-consistency", cfg.consistency]
    cmd += ["-endpoints", ",".join(cfg.endpoints), "-clients", str(cfg.clients)]
    cmd += ["-duration", f"{cfg.duration}s", "-keys", str(cfg.keys)]
    cmd += ["-value-size", str(cfg.value_size), "-write-ratio", str(cfg.write_ratio)]
    cmd += ["-prefix", cfg.key_prefix, "-timeout", f"{cfg.timeout}s", "-seed", str(cfg.seed)]
    return cmd + (["-preload"] if cfg.preload else [])


_ETCDLOAD_NUMBERS = ("seconds", "ops_per_s", "p50_ms", "p95_ms", "p99_ms")
_ETCDLOAD_COUNTS = ("clients", "conns", "ops", "errors")


def parse_etcdload(text: str) -> Result:
    """etcdload's JSON report as a :class:`Result` (its gRPC connection count kept under
    ``by_operation["grpc_connections"]``); ValueError naming the field that is wrong."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"etcdload output: expected one JSON document ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError("etcdload output: expected a JSON object")
    for name in _ETCDLOAD_COUNTS + _ETCDLOAD_NUMBERS:
        wanted = int if name in _ETCDLOAD_COUNTS else (int, float)
        if not isinstance(doc.get(name), wanted) or isinstance(doc.get(name), bool):
            raise ValueError(f"etcdload output: {name!r} expected a number, got {doc.get(name)!r}")
    by_operation = doc.get("by_operation")
    if not isinstance(by_operation, dict) or not all(
        isinstance(v, dict) for v in by_operation.values()
    ):
        raise ValueError("etcdload output: 'by_operation' expected an object of objects")
    samples = doc.get("error_samples", [])
    if not isinstance(samples, list):
        raise ValueError("etcdload output: 'error_samples' expected a list")
    return Result(
        target=str(doc.get("target", "etcd-grpc")),
        **{name: doc[name] for name in _ETCDLOAD_COUNTS + _ETCDLOAD_NUMBERS if name != "conns"},
        by_operation={**by_operation, "grpc_connections": {"value": doc["conns"]}},
        error_samples=[str(s) for s in samples],
    )


class Cluster:
    """One running system under test (three kvtrace nodes, or etcd) and its measurements."""

    def __init__(
        self,
        name: str,
        target: str,
        procs: list[subprocess.Popen[bytes]],
        endpoints: list[str],
        security: Security = PLAIN,
    ):
        self.name, self.target, self.procs, self.endpoints = name, target, procs, endpoints
        self.security = security
        self.runs: dict[str, list[Result]] = {}

    def common(self, args: argparse.Namespace) -> dict[str, Any]:
        return dict(
            endpoints=self.endpoints,
            clients=client_counts(args)[0],
            duration=args.duration,
            keys=args.keys,
            value_size=100,
            consistency="quorum",
            target=self.target,
            security=self.security,
        )

    def load(self, cfg: BenchConfig) -> tuple[Result, float]:
        """Run one measurement: its result and the load generator's CPU seconds."""
        before = client_cpu_seconds()
        result = run_sync(cfg)
        return result, client_cpu_seconds() - before

    def preload(self, args: argparse.Namespace) -> None:
        self.load(
            BenchConfig(**{**self.common(args), "duration": 0.1}, write_ratio=1.0, preload=True)
        )

    def measure(self, phase: str, overrides: dict[str, Any], args: argparse.Namespace) -> None:
        """Throughput and latency, plus the servers' and the load generator's CPU per operation."""
        before = cpu_seconds(self.procs)
        main_before = cpu_seconds(self.procs, main_thread_only=True)
        result, client = self.load(BenchConfig(**{**self.common(args), **overrides}))
        if result.ops:
            result.by_operation["server_cpu_us_per_op"] = {
                "value": round((cpu_seconds(self.procs) - before) / result.ops * 1e6, 1)
            }
            if (
                self.target == "kvtrace"
            ):  # the main thread is the event loop; the others mostly the writer's commits
                main = cpu_seconds(self.procs, main_thread_only=True) - main_before
                result.by_operation["server_cpu_us_per_op"]["event_loop"] = round(
                    main / result.ops * 1e6, 1
                )
            # the load generator must not be the bottleneck: its share of one core stays well below 1
            result.by_operation["client_cpu"] = {
                "us_per_op": round(client / result.ops * 1e6, 1),
                "cores": round(client / result.seconds, 2),
            }
        self.runs.setdefault(phase, []).append(result)

    def median(self) -> dict[str, Result]:
        """Per phase, the run with the median throughput (the rounds' figures are kept in it)."""
        out = {}
        for phase, runs in self.runs.items():
            ranked = sorted(runs, key=lambda r: r.ops_per_s)
            chosen = ranked[len(ranked) // 2]
            chosen.by_operation["rounds_ops_per_s"] = {
                f"round{i + 1}": r.ops_per_s for i, r in enumerate(runs)
            }
            out[phase] = chosen
        return out


class GoCluster(Cluster):
    """A system loaded by benchmarks/etcdload in a child process instead of the Python load
    generator: etcd's gRPC API (etcd's official Go client), or over HTTP etcd's JSON gateway
    or kvtrace's API (``api``), the same members as the Python-loaded system's."""

    def __init__(
        self,
        name: str,
        target: str,
        procs: list[subprocess.Popen[bytes]],
        endpoints: list[str],
        binary: Path,
        api: str,
    ):
        super().__init__(name, target, procs, endpoints)
        self.binary, self.api = binary, api

    def load(self, cfg: BenchConfig) -> tuple[Result, float]:
        cfg.validate()
        before = client_cpu_seconds(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            etcdload_command(self.binary, cfg, self.api),
            capture_output=True,
            text=True,
            timeout=cfg.duration + cfg.timeout + 60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"etcdload exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return parse_etcdload(proc.stdout), client_cpu_seconds(resource.RUSAGE_CHILDREN) - before


def build_etcdload() -> Path:
    """The Go load generator, built once into the tool cache (kvtrace.devstack.tools, under its
    build lock) and reused while its sources are unchanged. Build progress goes to stderr."""
    from kvtrace.devstack import tools

    tool = tools.TOOLS["etcdload"]
    with contextlib.redirect_stdout(sys.stderr):
        if tools.verify(tool) is not None:
            tools.check_prerequisites([tool])
        tools.ensure(tool)
    return Path(tool.path())


def run_rounds(clusters: list[Cluster], args: argparse.Namespace) -> None:
    """Loaded phases at every client count round-robin over the systems, `--rounds` times, so
    that each sees the same mix of machine load (the machine is shared); then the unloaded
    phases once each."""
    counts = client_counts(args)
    for cluster in clusters:
        cluster.preload(args)
    for _ in range(args.rounds):
        for cluster in clusters:
            for clients in counts:
                for phase, overrides in LOADED:
                    key = phase_key(phase, clients, counts)
                    cluster.measure(key, {**overrides, "clients": clients}, args)
    for cluster in clusters:
        for phase, overrides in UNLOADED:
            cluster.measure(phase, {**overrides, "duration": min(2.0, args.duration)}, args)


def tls_costs(results: dict[str, dict[str, Result]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per tracing configuration measured both ways: the servers' CPU per operation without
    and with TLS and tokens, and the difference (all three nodes together)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, secured in results.items():
        if not name.endswith(" tls+token") or name[: -len(" tls+token")] not in results:
            continue
        plain = results[name[: -len(" tls+token")]]
        costs = {}
        for phase, result in secured.items():
            mine = cpu_per_op(result)
            base = cpu_per_op(plain[phase]) if phase in plain else None
            if mine is not None and base is not None:
                costs[phase] = {"plain": base, "tls": mine, "added": round(mine - base, 1)}
        out[name[: -len(" tls+token")]] = costs
    return out


def cpu_per_op(result: Result) -> float | None:
    """The servers' CPU µs per operation of a measurement (None when it made no operation)."""
    value = result.by_operation.get("server_cpu_us_per_op", {}).get("value")
    return None if value is None else float(value)


def client_cpu_per_op(result: Result) -> float | None:
    """The load generator's CPU µs per operation of a measurement (None when not measured)."""
    value = result.by_operation.get("client_cpu", {}).get("us_per_op")
    return None if value is None else float(value)


def ratios_to(
    base_name: str, results: dict[str, dict[str, Result]], invert: bool = False
) -> dict[str, float]:
    """Every other system's ops/s and server CPU per op over ``base_name``'s, per loaded phase
    (traced / untraced), or with ``invert`` ``base_name``'s over theirs (kvtrace / etcd)."""
    base = results.get(base_name)
    ratios: dict[str, float] = {}
    for name, res in results.items():
        if base is None or name == base_name:
            continue
        for phase in (p for p in base if not p.startswith("unloaded") and p in res):
            mine, theirs = (base[phase], res[phase]) if invert else (res[phase], base[phase])
            label = f"{base_name} / {name}" if invert else f"{name} / {base_name}"
            if theirs.ops_per_s:
                ratios[f"{label} {phase}"] = round(mine.ops_per_s / theirs.ops_per_s, 3)
            cpu_mine, cpu_theirs = cpu_per_op(mine), cpu_per_op(theirs)
            if cpu_mine is not None and cpu_theirs:
                ratios[f"{label} {phase} (server CPU per op)"] = round(cpu_mine / cpu_theirs, 3)
    return ratios


def traced_ratios(base_name: str, kvtrace: dict[str, dict[str, Result]]) -> dict[str, float]:
    """Every kvtrace configuration over the untraced one measured by the same load generator,
    and the Go-loaded untraced cluster over the Python-loaded one (what the generator changes)."""
    go = {n: r for n, r in kvtrace.items() if n.endswith(GO_CLIENT)}
    python = {n: r for n, r in kvtrace.items() if n not in go}
    ratios = ratios_to(base_name, python) | ratios_to(base_name + GO_CLIENT, go)
    if base_name in kvtrace and base_name + GO_CLIENT in kvtrace:
        both = {name: kvtrace[name] for name in (base_name, base_name + GO_CLIENT)}
        ratios |= ratios_to(base_name, both)
    return ratios


def split_etcd(
    results: dict[str, dict[str, Result]],
) -> tuple[dict[str, dict[str, Result]], dict[str, dict[str, Result]]]:
    """The run's kvtrace configurations and its etcd paths, apart."""
    etcd = {name: res for name, res in results.items() if name in ETCD_SYSTEMS}
    return {n: r for n, r in results.items() if n not in etcd}, etcd


def vs_etcd(results: dict[str, dict[str, Result]], base_name: str) -> dict[str, float]:
    """``base_name`` (untraced kvtrace) over each etcd path, per loaded phase: the Python-loaded
    kvtrace over the JSON gateway under the same generator and over etcd's gRPC path; the
    Go-loaded kvtrace (``base_name`` + " (Go client)", if measured) over the JSON gateway
    under the Go generator and over the gRPC path, so that each pair shares its generator's
    cost."""
    _, etcd = split_etcd(results)
    pairs = [(base_name, [ETCD_PATHS["json"], ETCD_PATHS["grpc"]])]
    pairs.append((base_name + GO_CLIENT, [ETCD_JSON_GO, ETCD_PATHS["grpc"]]))
    ratios: dict[str, float] = {}
    for base, peers in pairs:
        if base in results:
            against = {name: etcd[name] for name in peers if name in etcd}
            ratios |= ratios_to(base, {base: results[base], **against}, invert=True)
    return ratios


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pair(a: float | None, b: float | None, digits: int = 0) -> str:
    return f"{_num(a, digits)} / {_num(b, digits)}"


def comparison_table(results: dict[str, dict[str, Result]], counts: Sequence[int]) -> str:
    """Every system at every client count, as a Markdown table (what the README quotes); the
    unloaded (1 client) p50s on each system's first row."""
    lines = [
        "| system | clients | writes/s | reads/s | write p50 / p99 ms | read p50 / p99 ms "
        "| server CPU µs per write / read | load generator CPU µs per write / read "
        "| unloaded p50 write / read ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, phases in results.items():
        for i, clients in enumerate(counts):
            w = phases.get(phase_key("writes", clients, counts))
            r = phases.get(phase_key("reads", clients, counts))
            uw, ur = phases.get("unloaded_writes"), phases.get("unloaded_reads")
            unloaded = _pair(uw.p50_ms if uw else None, ur.p50_ms if ur else None, 2)
            lines.append(
                f"| {name} | {clients} | {_num(w.ops_per_s if w else None)} "
                f"| {_num(r.ops_per_s if r else None)} "
                f"| {_pair(w.p50_ms if w else None, w.p99_ms if w else None, 2)} "
                f"| {_pair(r.p50_ms if r else None, r.p99_ms if r else None, 2)} "
                f"| {_pair(cpu_per_op(w) if w else None, cpu_per_op(r) if r else None)} "
                f"| {_pair(client_cpu_per_op(w) if w else None, client_cpu_per_op(r) if r else None)} "
                f"| {unloaded if i == 0 else ''} |"
            )
    return "\n".join(lines)


# The write-path targets (docs/kvnode.md "Against the performance targets"): untraced,
# QUORUM, 32 clients (the unloaded p50 with 1 client): (name, phase, figure, bound, at most?).
TARGETS = (
    ("QUORUM writes/s", "writes", "ops_per_s", 12_000.0, False),
    ("server CPU µs per write", "writes", "server_cpu_us_per_op", 140.0, True),
    ("QUORUM reads/s", "reads", "ops_per_s", 25_000.0, False),
    ("unloaded write p50 ms", "unloaded_writes", "p50_ms", 0.6, True),
)
TARGET_CLIENTS = 32


def judge_targets(
    results: dict[str, dict[str, Result]], counts: Sequence[int], base_name: str
) -> dict[str, Any]:
    """The targets against the untraced cluster as the Go generator measured it (etcd's best
    figure is its Go client's too), or the Python generator's when the Go one did not run;
    each target met or not, with the figure. Empty without a 32-client run."""
    name = base_name + GO_CLIENT if base_name + GO_CLIENT in results else base_name
    phases = results.get(name)
    if phases is None or TARGET_CLIENTS not in counts:
        return {}
    judged: dict[str, Any] = {"judged_on": name, "clients": TARGET_CLIENTS, "targets": {}}
    for label, phase, figure, bound, at_most in TARGETS:
        key = phase if phase.startswith("unloaded") else phase_key(phase, TARGET_CLIENTS, counts)
        result = phases.get(key)
        value = None
        if result is not None:
            value = (
                cpu_per_op(result) if figure == "server_cpu_us_per_op" else getattr(result, figure)
            )
        met = value is not None and (value <= bound if at_most else value >= bound)
        judged["targets"][label] = {
            "target": f"{'<=' if at_most else '>='} {bound:g}",
            "value": value,
            "met": met,
        }
    return judged


def start_systems(
    tmp: Path, args: argparse.Namespace, sink: Sink, clusters: list[Cluster], notes: list[str]
) -> None:
    """Start every system under test, appending each to ``clusters`` as soon as it runs (so
    that the caller stops what started even when a later one fails)."""
    subnet = 200
    secure = [name for name in args.secure.split(",") if name]
    pure = [name for name in args.pure.split(",") if name]
    if args.baseline and "off" not in pure:
        pure.append("off")  # a baseline runs pure Python: compare it with this tree's, pure
    variants: list[tuple[str, bool, bool, Path | None]]
    variants = [(n, False, False, None) for n in args.tracing.split(",")]
    variants += [(n, True, False, None) for n in secure] + [(n, False, True, None) for n in pure]
    variants += [("off", False, True, tree) for tree in args.baseline]
    paths = [] if args.no_etcd else args.etcd_paths
    etcdload = None
    if "go" in args.loadgen or "grpc" in paths:
        try:
            etcdload = build_etcdload()
        except RuntimeError as exc:  # MissingPrerequisite included
            notes.append(f"Go load generator columns skipped: etcdload not built: {exc}")
    for name, tls, slow, tree in variants:
        suffix = " tls+token" if tls else " pure" if slow else ""
        if tree is not None:
            suffix = f" baseline {tree.name}"
        root = tmp / f"{name}{suffix.replace(' ', '-').replace('+', '-')}"
        root.mkdir()
        procs, endpoints, security = start_kvtrace(
            root, subnet, TRACING[name], sink, tls, slow, tree
        )
        system = f"kvtrace tracing={name}{suffix}"
        go = etcdload is not None and "go" in args.loadgen and not tls  # etcdload: plain HTTP
        if "python" in args.loadgen or not go:
            clusters.append(Cluster(system, "kvtrace", procs, endpoints, security))
        if go:
            assert etcdload is not None
            clusters.append(
                GoCluster(system + GO_CLIENT, "kvtrace", procs, endpoints, etcdload, "kvtrace")
            )
        subnet += 1
    etcd = find_etcd() if paths else None
    if not paths:
        notes.append("etcd columns skipped: --no-etcd or empty --etcd-paths")
        return
    if etcd is None:
        notes.append(
            "etcd columns skipped: no etcd binary at "
            f"{ETCD_CANDIDATES[0]} or on PATH (build it with the local stack's tool cache)"
        )
        return
    root = tmp / "etcd"
    root.mkdir()
    procs, endpoints = start_etcd(etcd, root, subnet)
    systems: list[Cluster] = []  # the same members through each path and generator
    if "json" in paths and "python" in args.loadgen:
        systems.append(Cluster(ETCD_PATHS["json"], "etcd", procs, endpoints))
    if etcdload is not None:
        if "json" in paths and "go" in args.loadgen:
            systems.append(GoCluster(ETCD_JSON_GO, "etcd", procs, endpoints, etcdload, "etcd-json"))
        if "grpc" in paths:
            systems.append(
                GoCluster(ETCD_PATHS["grpc"], "etcd", procs, endpoints, etcdload, "grpc")
            )
    clusters.extend(systems)
    if not systems:
        stop(procs)


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, Result]],
    load_at_start: tuple[float, float, float],
    notes: list[str],
) -> dict[str, Any]:
    """The JSON document of a run."""
    kvtrace, etcd = split_etcd(results)
    base = "kvtrace tracing=off"
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_at_start": load_at_start,
            "load_at_end": os.getloadavg(),
        },
        "command": shlex.join(["benchmarks/kv.py", *sys.argv[1:]]),
        "clients": client_counts(args),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "value_bytes": 100,
        "consistency": "quorum",
        "results": {
            name: {phase: r.as_dict() for phase, r in phases.items()}
            for name, phases in results.items()
        },
        "ratios_ops_per_s": traced_ratios(base, kvtrace),
        "kvtrace_vs_etcd": vs_etcd(results, base),
        "targets": judge_targets(results, client_counts(args), base),
        "what_differs_from_etcd": WHAT_DIFFERS if etcd else None,
        "tls_cost_server_cpu_us_per_op": tls_costs(results),
        "notes": notes,
    }


def print_text(doc: dict[str, Any], results: dict[str, dict[str, Result]]) -> None:
    """The tables and ratio lines after the JSON document."""
    rows = [
        (f"{name} {phase}", r) for name, phases in results.items() for phase, r in phases.items()
    ]
    print(table(rows))
    for name, phases in results.items():
        cpu_text = ", ".join(
            f"{phase} {cpu_per_op(r) or 0:.0f}"
            + (
                f" (event loop {r.by_operation['server_cpu_us_per_op']['event_loop']:.0f})"
                if "event_loop" in r.by_operation.get("server_cpu_us_per_op", {})
                else ""
            )
            for phase, r in phases.items()
        )
        print(f"server CPU µs/op, {name}: {cpu_text}")
        client_text = ", ".join(
            f"{phase} {r.by_operation.get('client_cpu', {}).get('cores', 0):.2f}"
            for phase, r in phases.items()
        )
        print(f"load generator CPU (cores), {name}: {client_text}")
    print()
    print(comparison_table(results, doc["clients"]))
    print()
    for label, ratio in {**doc["ratios_ops_per_s"], **doc["kvtrace_vs_etcd"]}.items():
        print(f"{label}: {ratio:.3f}")
    if doc["targets"]:
        print(f"targets, judged on {doc['targets']['judged_on']} at {TARGET_CLIENTS} clients:")
        for label, t in doc["targets"]["targets"].items():
            state = "met" if t["met"] else "NOT met"
            print(f"  {label} {t['target']}: {t['value']} ({state})")
    if doc["what_differs_from_etcd"]:
        print(doc["what_differs_from_etcd"])
    for label, phases in doc["tls_cost_server_cpu_us_per_op"].items():
        print(
            f"TLS + token cost, {label}: "
            + ", ".join(
                f"{phase} {c['plain']:.0f} -> {c['tls']:.0f} µs server CPU/op (+{c['added']:.0f})"
                for phase, c in phases.items()
            )
        )
    start, end = doc["machine"]["load_at_start"], doc["machine"]["load_at_end"]
    print(f"load average at start {start[0]:.1f}, at end {end[0]:.1f} ({os.cpu_count()} CPUs)")
    for note in doc["notes"]:
        print(note)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument(
        "--clients",
        type=parse_clients,
        default=[32, 128],
        help="client counts of the loaded phases, comma-separated (default 32,128)",
    )
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument(
        "--tracing", default="off,head-0.1,all-spans", help="comma list of " + ",".join(TRACING)
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="loaded measurements per system (the median is reported)",
    )
    parser.add_argument(
        "--secure",
        default="off",
        help="comma list of --tracing names also measured with TLS "
        "and client tokens on ('' for none)",
    )
    parser.add_argument(
        "--etcd-paths",
        type=parse_etcd_paths,
        default=["json", "grpc"],
        help="how etcd is measured: json (its JSON gateway, the Python load generator), grpc "
        "(its gRPC API, benchmarks/etcdload with etcd's Go client); default json,grpc",
    )
    parser.add_argument(
        "--pure",
        default="",
        help="comma list of --tracing names also measured with the pure-Python hot path "
        "(KVNODE_PURE_PYTHON=1) beside the compiled one ('' for none)",
    )
    parser.add_argument(
        "--loadgen",
        type=parse_loadgens,
        default=list(LOADGENS),
        help="load generators for kvtrace and etcd's JSON gateway: python (kvtrace bench's, "
        "~30-37 µs of CPU per operation) and/or go (benchmarks/etcdload's HTTP mode, ~16-24 µs); "
        "default python,go",
    )
    parser.add_argument(
        "--baseline",
        type=baseline_tree,
        action="append",
        default=[],
        help="a source tree of another commit (git worktree add --detach DIR COMMIT): its "
        "untraced nodes are measured beside this tree's in the same rounds, both pure Python "
        "(repeatable)",
    )
    parser.add_argument("--no-etcd", action="store_true")
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    notes: list[str] = []
    clusters: list[Cluster] = []
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        sink = Sink()
        try:
            start_systems(Path(tmp), args, sink, clusters, notes)
            run_rounds(clusters, args)
        finally:
            for cluster in clusters:
                stop(cluster.procs)
            sink.close()
    results: dict[str, dict[str, Result]] = {c.name: c.median() for c in clusters}
    doc = report(args, results, load_at_start, notes)
    print(json.dumps(doc, indent=2))
    print_text(doc, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
