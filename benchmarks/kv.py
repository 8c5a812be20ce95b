"""Benchmark: a 3-node kvtrace cluster (tracing off / head 0.1 / every span) against etcd.

    .venv/bin/python benchmarks/kv.py [--duration 5] [--clients 32] [--keys 2000]

Each configuration starts three fresh `kvtrace node serve` processes on 127.0.x.y under
`opentelemetry-instrument` (traces go to a local OTLP/HTTP sink that discards them), preloads
the key space, then measures QUORUM writes and QUORUM reads (32 clients, then 1 client for unloaded
latency) with 100-byte values using
`kvtrace bench`'s load generator. If an etcd binary is found (the local stack's
~/.cache/kvtrace/tools/etcd-3.6.16/etcd, or `etcd` on PATH) the same workload runs against
a 3-member etcd cluster through its JSON gateway. Prints a JSON document and a table,
with the ratios traced/untraced and kvtrace/etcd. Not a test: it only reports.
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

BIN = Path(sys.executable).parent
ETCD_CANDIDATES = [Path.home() / ".cache/kvtrace/tools/etcd-3.6.16/etcd"]
TRACING = {
    "off": {"OTEL_SDK_DISABLED": "true"},
    "head-0.1": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "all-spans": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30, ok: Any = lambda body: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
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


def start_kvtrace(root: Path, subnet: int, tracing: dict[str, str], sink: Sink) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    ips = [f"127.0.{subnet}.{i + 2}" for i in range(3)]
    ports = [(free_port(ip), free_port(ip)) for ip in ips]
    peers = ",".join(f"kv-{i}={ip}:{pp}" for i, (ip, (_, pp)) in enumerate(zip(ips, ports)))
    procs = []
    for i, (ip, (cp, pp)) in enumerate(zip(ips, ports)):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KVNODE_"))}
        env.update({
            "OTEL_SERVICE_NAME": "kvnode", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}", "OTEL_BSP_MAX_QUEUE_SIZE": "65536", "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id=kv-{i}",
            **tracing,
            "KVNODE_ID": f"kv-{i}", "KVNODE_CLIENT_ADDR": f"{ip}:{cp}", "KVNODE_PEER_ADDR": f"{ip}:{pp}",
            "KVNODE_PEERS": peers, "KVNODE_DATA_DIR": str(root / f"kv-{i}"), "KVNODE_LOG_LEVEL": "warning",
        })
        cmd = [str(BIN / "opentelemetry-instrument"), str(BIN / "kvtrace"), "node", "serve"]
        log = open(root / f"kv-{i}.log", "wb")
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    endpoints = [f"http://{ip}:{cp}" for ip, (cp, _) in zip(ips, ports)]
    for url in endpoints:
        wait_http(url + "/readyz")
    return procs, endpoints


def find_etcd() -> str | None:
    for path in ETCD_CANDIDATES:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("etcd")


def start_etcd(binary: str, root: Path, subnet: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    ips = [f"127.0.{subnet}.{i + 2}" for i in range(3)]
    ports = [(free_port(ip), free_port(ip)) for ip in ips]
    initial = ",".join(f"e{i}=http://{ip}:{pp}" for i, (ip, (_, pp)) in enumerate(zip(ips, ports)))
    procs = []
    for i, (ip, (cp, pp)) in enumerate(zip(ips, ports)):
        cmd = [binary, "--name", f"e{i}", "--data-dir", str(root / f"etcd-{i}"),
               "--listen-client-urls", f"http://{ip}:{cp}", "--advertise-client-urls", f"http://{ip}:{cp}",
               "--listen-peer-urls", f"http://{ip}:{pp}", "--initial-advertise-peer-urls", f"http://{ip}:{pp}",
               "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", "bench",
               "--log-level", "error"]
        log = open(root / f"etcd-{i}.log", "wb")
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


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU of the server processes (threads included), from /proc."""
    total = 0
    for p in procs:
        try:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(endpoints: list[str], target: str, args: argparse.Namespace, procs: list[subprocess.Popen[bytes]]) -> dict[str, Result]:
    """Throughput and latency, plus the servers' CPU per operation: robust to a busy machine."""
    common: dict[str, Any] = dict(endpoints=endpoints, clients=args.clients, duration=args.duration,
                                  keys=args.keys, value_size=100, consistency="quorum", target=target)
    run_sync(BenchConfig(**{**common, "duration": 0.1}, write_ratio=1.0, preload=True))
    out = {}
    for phase, overrides in (("writes", {"write_ratio": 1.0}), ("reads", {"write_ratio": 0.0}),
                             ("unloaded_writes", {"write_ratio": 1.0, "clients": 1, "duration": min(2.0, args.duration)}),
                             ("unloaded_reads", {"write_ratio": 0.0, "clients": 1, "duration": min(2.0, args.duration)})):
        before, client_before = cpu_seconds(procs), client_cpu_seconds()
        result = run_sync(BenchConfig(**{**common, **overrides}))
        if result.ops:
            result.by_operation["server_cpu_us_per_op"] = {"value": round((cpu_seconds(procs) - before) / result.ops * 1e6, 1)}
            client = client_cpu_seconds() - client_before
            # the load generator must not be the bottleneck: its share of one core stays well below 1
            result.by_operation["client_cpu"] = {"us_per_op": round(client / result.ops * 1e6, 1),
                                                 "cores": round(client / result.seconds, 2)}
        out[phase] = result
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--tracing", default="off,head-0.1,all-spans", help="comma list of " + ",".join(TRACING))
    parser.add_argument("--no-etcd", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, Result]] = {}
    notes: list[str] = []
    subnet = 200
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        sink = Sink()
        try:
            for name in args.tracing.split(","):
                root = Path(tmp) / name
                root.mkdir()
                procs, endpoints = start_kvtrace(root, subnet, TRACING[name], sink)
                subnet += 1
                try:
                    results[f"kvtrace tracing={name}"] = measure(endpoints, "kvtrace", args, procs)
                finally:
                    stop(procs)
        finally:
            sink.close()
        etcd = None if args.no_etcd else find_etcd()
        if etcd:
            root = Path(tmp) / "etcd"
            root.mkdir()
            procs, endpoints = start_etcd(etcd, root, subnet)
            try:
                results["etcd (JSON gateway)"] = measure(endpoints, "etcd", args, procs)
            finally:
                stop(procs)
        elif args.no_etcd:
            notes.append("etcd column skipped: --no-etcd")
        else:
            notes.append("etcd column skipped: no etcd binary at "
                         f"{ETCD_CANDIDATES[0]} or on PATH (build it with the local stack's tool cache)")
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
    doc = {
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "clients": args.clients, "duration_s": args.duration, "value_bytes": 100, "consistency": "quorum",
        "results": {name: {phase: r.as_dict() for phase, r in phases.items()} for name, phases in results.items()},
        "ratios_ops_per_s": ratios, "notes": notes,
    }
    print(json.dumps(doc, indent=2))
    rows = [(f"{name[:18]} {phase}", r) for name, phases in results.items() for phase, r in phases.items()]
    print(table(rows))
    for name, phases in results.items():
        cpu_text = ", ".join(f"{phase} {r.by_operation.get('server_cpu_us_per_op', {}).get('value', 0):.0f}"
                        for phase, r in phases.items())
        print(f"server CPU µs/op, {name}: {cpu_text}")
        client_text = ", ".join(f"{phase} {r.by_operation.get('client_cpu', {}).get('cores', 0):.2f}" for phase, r in phases.items())
        print(f"load generator CPU (cores), {name}: {client_text}")
    for label, ratio in ratios.items():
        print(f"{label}: {ratio:.3f}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
