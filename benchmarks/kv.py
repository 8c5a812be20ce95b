"""Benchmark: a 3-node kvtrace cluster (tracing off / head 0.1 / every span) against etcd.

    .venv/bin/python benchmarks/kv.py [--duration 5] [--clients 32] [--keys 2000] [--rounds 3]
        [--tracing off,head-0.1,all-spans] [--secure off]

`--secure` names tracing configurations that also run a second time with the KV cluster's
transport security on (TLS on both ports, mutual between peers, and a bearer token per
request: what the operator renders by default), so the cost of TLS per operation shows as
"tls / plain" ratios of throughput and server CPU per operation.

Each configuration runs three fresh `kvtrace node serve` processes on 127.0.x.y under
`opentelemetry-instrument` (traces go to a local OTLP/HTTP sink that discards them). If an
etcd binary is found (the local stack's ~/.cache/kvtrace/tools/etcd-3.6.16/etcd, or `etcd` on
PATH) a 3-member etcd cluster joins, measured through its JSON gateway. All systems are
started and preloaded first; then QUORUM writes and QUORUM reads (32 clients, 100-byte values,
`kvtrace bench`'s load generator) run round-robin over them `--rounds` times, so that each
sees the same mix of machine load, and the median round is reported; last, 1 client each for
the unloaded latency. Prints a JSON document and a table with the ratios traced/untraced and
kvtrace/etcd, the servers' CPU per operation and the load generator's CPU. Not a test: it
only reports.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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
    root: Path, subnet: int, tracing: dict[str, str], sink: Sink, secure: bool = False
) -> tuple[list[subprocess.Popen[bytes]], list[str], Security]:
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
                **security_env,
            }
        )
        cmd = [str(BIN / "opentelemetry-instrument"), str(BIN / "kvtrace"), "node", "serve"]
        log = open(root / f"kv-{i}.log", "wb")  # noqa: SIM115 - the child's, for its lifetime
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
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


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


LOADED = (("writes", {"write_ratio": 1.0}), ("reads", {"write_ratio": 0.0}))
PLAIN = Security()  # no TLS, no token
UNLOADED = (
    ("unloaded_writes", {"write_ratio": 1.0, "clients": 1}),
    ("unloaded_reads", {"write_ratio": 0.0, "clients": 1}),
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
            clients=args.clients,
            duration=args.duration,
            keys=args.keys,
            value_size=100,
            consistency="quorum",
            target=self.target,
            security=self.security,
        )

    def preload(self, args: argparse.Namespace) -> None:
        run_sync(
            BenchConfig(**{**self.common(args), "duration": 0.1}, write_ratio=1.0, preload=True)
        )

    def measure(self, phase: str, overrides: dict[str, Any], args: argparse.Namespace) -> None:
        """Throughput and latency, plus the servers' and the load generator's CPU per operation."""
        before, client_before = cpu_seconds(self.procs), client_cpu_seconds()
        main_before = cpu_seconds(self.procs, main_thread_only=True)
        result = run_sync(BenchConfig(**{**self.common(args), **overrides}))
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
            client = client_cpu_seconds() - client_before
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


def run_rounds(clusters: list[Cluster], args: argparse.Namespace) -> None:
    """Loaded phases round-robin over the systems, `--rounds` times, so that each sees the same
    mix of machine load (the machine is shared); then the unloaded phases once each."""
    for cluster in clusters:
        cluster.preload(args)
    for _ in range(args.rounds):
        for cluster in clusters:
            for phase, overrides in LOADED:
                cluster.measure(phase, overrides, args)
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
            mine = result.by_operation.get("server_cpu_us_per_op", {}).get("value")
            base = (
                plain[phase].by_operation.get("server_cpu_us_per_op", {}).get("value")
                if phase in plain
                else None
            )
            if mine is not None and base is not None:
                costs[phase] = {"plain": base, "tls": mine, "added": round(mine - base, 1)}
        out[name[: -len(" tls+token")]] = costs
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=32)
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
    parser.add_argument("--no-etcd", action="store_true")
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    notes: list[str] = []
    clusters: list[Cluster] = []
    subnet = 200
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        sink = Sink()
        try:
            secure = [name for name in args.secure.split(",") if name]
            for name, tls in [(n, False) for n in args.tracing.split(",")] + [
                (n, True) for n in secure
            ]:
                root = Path(tmp) / f"{name}{'-tls' if tls else ''}"
                root.mkdir()
                procs, endpoints, security = start_kvtrace(root, subnet, TRACING[name], sink, tls)
                label = f"kvtrace tracing={name}{' tls+token' if tls else ''}"
                clusters.append(Cluster(label, "kvtrace", procs, endpoints, security))
                subnet += 1
            etcd = None if args.no_etcd else find_etcd()
            if etcd:
                root = Path(tmp) / "etcd"
                root.mkdir()
                procs, endpoints = start_etcd(etcd, root, subnet)
                clusters.append(Cluster("etcd (JSON gateway)", "etcd", procs, endpoints))
            elif args.no_etcd:
                notes.append("etcd column skipped: --no-etcd")
            else:
                notes.append(
                    "etcd column skipped: no etcd binary at "
                    f"{ETCD_CANDIDATES[0]} or on PATH (build it with the local stack's tool cache)"
                )
            run_rounds(clusters, args)
        finally:
            for cluster in clusters:
                stop(cluster.procs)
            sink.close()
    results: dict[str, dict[str, Result]] = {c.name: c.median() for c in clusters}
    ratios: dict[str, float] = {}
    base = results.get("kvtrace tracing=off")
    for name, res in results.items():
        if base is None or res is base:
            continue
        for phase in ("writes", "reads"):
            if base[phase].ops_per_s:
                label = f"{name} / kvtrace tracing=off {phase}"
                ratios[label] = round(res[phase].ops_per_s / base[phase].ops_per_s, 3)
                cpu = base[phase].by_operation.get("server_cpu_us_per_op", {}).get("value")
                if cpu:
                    mine = res[phase].by_operation.get("server_cpu_us_per_op", {}).get("value", 0)
                    ratios[f"{label} (server CPU per op)"] = round(mine / cpu, 3)
    tls_cost = tls_costs(results)
    doc = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_at_start": load_at_start,
            "load_at_end": os.getloadavg(),
        },
        "clients": args.clients,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "value_bytes": 100,
        "consistency": "quorum",
        "results": {
            name: {phase: r.as_dict() for phase, r in phases.items()}
            for name, phases in results.items()
        },
        "ratios_ops_per_s": ratios,
        "tls_cost_server_cpu_us_per_op": tls_cost,
        "notes": notes,
    }
    print(json.dumps(doc, indent=2))
    rows = [
        (f"{name} {phase}", r) for name, phases in results.items() for phase, r in phases.items()
    ]
    print(table(rows))
    for name, phases in results.items():
        cpu_text = ", ".join(
            f"{phase} {r.by_operation.get('server_cpu_us_per_op', {}).get('value', 0):.0f}"
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
    for label, ratio in ratios.items():
        print(f"{label}: {ratio:.3f}")
    for label, phases in tls_cost.items():
        print(
            f"TLS + token cost, {label}: "
            + ", ".join(
                f"{phase} {c['plain']:.0f} -> {c['tls']:.0f} µs server CPU/op (+{c['added']:.0f})"
                for phase, c in phases.items()
            )
        )
    print(
        f"load average at start {load_at_start[0]:.1f}, at end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)"
    )
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
