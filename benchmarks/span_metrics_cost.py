"""Benchmark: what metrics from traces cost, in one run.

    .venv/bin/python benchmarks/span_metrics_cost.py [--traces 20000] [--batch 200] [--rounds 2]
        [--out benchmarks/results/span-metrics-cost.json]

The real ``otelcol-kvtrace`` runs the rendered collector config of a production pipeline twice:
``metrics.enabled: false`` and the default ``metrics.enabled: true`` (the ``spanmetrics`` and
``servicegraph`` connectors on every span before tail sampling, pushing to the pipeline's
rendered Prometheus). The same synthetic KV traffic goes to both over OTLP/HTTP: ``--traces``
QUORUM-write traces of 3 spans (the coordinator's SERVER span and two replica SERVER spans,
the attributes the node sets), 5% of them failing. Reported: the collector's CPU (user +
system from /proc) per accepted span in each configuration and their ratio (budget: the
connectors add at most 15%), and the Prometheus resident memory after the run (budget: 300 MiB
for one pipeline). Prints a JSON document (with the machine's load average before and after:
the CPU numbers are only comparable within one run), then a short table. Not a test: it only
reports.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "tracing")]

from tracing_stack import loopback_config, pipeline  # noqa: E402

from kvtrace.devstack.backends import Collector, Jaeger  # noqa: E402
from kvtrace.devstack.proc import urlopen_direct  # noqa: E402
from kvtrace.devstack.prometheus import Prometheus  # noqa: E402
from kvtrace_operator.render import render_collector_config, render_jaeger_config  # noqa: E402
from kvtrace_operator.render.metrics import prometheus_config  # noqa: E402
from kvtrace_operator.render.monitoring import rules_for  # noqa: E402
from kvtrace_operator.spec import parse_pipeline  # noqa: E402

BASE = {
    "sampling": {"mode": "production", "decisionWait": "2s"},
    "security": {"auth": {"enabled": False}, "tls": {"enabled": False}},
}
CONFIGS = {"connectors-off": {"metrics": {"enabled": False}}, "connectors-on": {}}
CPU_BUDGET, MEMORY_BUDGET_MIB = 0.15, 300


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def requests(traces: int, batch: int, seed: int) -> list[bytes]:
    """OTLP/HTTP protobuf bodies: ``batch`` traces of 3 spans each, like the KV nodes send."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    rng = random.Random(seed)

    def attrs(**values: Any) -> list[KeyValue]:
        return [
            KeyValue(
                key=k.replace("_", "."),
                value=AnyValue(string_value=str(v))
                if isinstance(v, str)
                else AnyValue(int_value=int(v)),
            )
            for k, v in values.items()
        ]

    bodies = []
    for start in range(0, traces, batch):
        req = ExportTraceServiceRequest()
        for member in range(3):
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(
                attrs(service_name="orders", kvstore_member_id=f"orders-{member}")
            )
            rs.scope_spans.add()
        now = time.time_ns()
        for _ in range(start, min(start + batch, traces)):
            trace_id, root = rng.randbytes(16), rng.randbytes(8)
            failed = rng.random() < 0.05
            coordinator = rng.randrange(3)
            spans = req.resource_spans[coordinator].scope_spans[0].spans
            spans.add(
                trace_id=trace_id,
                span_id=root,
                name="PUT /v1/kv/{key}",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now,
                end_time_unix_nano=now + 2_000_000,
                attributes=attrs(
                    kvstore_operation="write",
                    kvstore_consistency="quorum",
                    kvstore_key_hash=f"{rng.getrandbits(64):016x}",
                ),
                status=Status(
                    code=Status.STATUS_CODE_ERROR if failed else Status.STATUS_CODE_UNSET
                ),
            )
            for peer in (p for p in range(3) if p != coordinator):
                req.resource_spans[peer].scope_spans[0].spans.add(
                    trace_id=trace_id,
                    span_id=rng.randbytes(8),
                    parent_span_id=root,
                    name="kvstore.replicate",
                    kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=now + 200_000,
                    end_time_unix_nano=now + 1_000_000,
                    attributes=attrs(kvstore_operation="replicate"),
                )
        bodies.append(req.SerializeToString())
    return bodies


def accepted(collector: Collector) -> float:
    with urlopen_direct(f"http://{collector.endpoint('metrics')}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("otelcol_receiver_accepted_spans")
    )


def run(
    name: str, extra: dict[str, Any], bodies: list[bytes], spans: int, workdir: Path
) -> dict[str, Any]:
    pipe = pipeline(**BASE, **extra)
    spec = parse_pipeline(pipe["spec"])
    prom = None
    if spec.metrics.enabled:
        prom = Prometheus(
            prometheus_config(pipe, spec), rules_for(pipe, spec), workdir=workdir / f"{name}-prom"
        ).start()
    url = {"prometheus_url": prom.url} if prom else {}
    jaeger = Jaeger(
        loopback_config(render_jaeger_config(pipe), **url), workdir=workdir / f"{name}-jaeger"
    ).start()
    collector = Collector(
        loopback_config(render_collector_config(pipe), jaeger_otlp_grpc=jaeger.otlp_grpc, **url),
        workdir=workdir / f"{name}-collector",
    ).start()
    try:
        assert collector.process is not None and collector.process.popen is not None
        pid = collector.process.popen.pid
        target = collector.otlp_http + "/v1/traces"
        time.sleep(1.0)  # the collector's start-up work is not counted
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        for body in bodies:
            req = urllib.request.Request(
                target, data=body, headers={"Content-Type": "application/x-protobuf"}
            )
            with urlopen_direct(req, timeout=30) as resp:
                assert resp.status == 200
        deadline = time.monotonic() + 60
        while accepted(collector) < spans and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # decision wait (2 s) and the batch: the sampler's work is counted too
        cpu = cpu_seconds(pid) - cpu0
        result = {
            "spans": spans,
            "seconds": round(time.monotonic() - t0, 2),
            "collector_cpu_s": round(cpu, 3),
            "cpu_us_per_span": round(cpu / spans * 1e6, 3),
        }
        if prom is not None:
            time.sleep(16)  # one connector flush (15 s) into Prometheus
            assert prom.process is not None and prom.process.popen is not None
            result["prometheus_rss_mib"] = round(rss_mib(prom.process.popen.pid), 1)
            result["spanmetrics_series"] = len(prom.query("traces_span_metrics_calls_total"))
        return result
    finally:
        collector.stop()
        jaeger.stop()
        if prom is not None:
            prom.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating runs per configuration; the best counts"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kvtrace-span-metrics-cost"))
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    bodies = requests(args.traces, args.batch, seed=13)
    spans = 3 * args.traces
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for index in range(args.rounds):
        for name, extra in CONFIGS.items():
            runs[name].append(run(name, extra, bodies, spans, args.workdir / f"round{index}"))
    best = {
        name: min(results, key=lambda r: r["cpu_us_per_span"]) for name, results in runs.items()
    }
    ratio = best["connectors-on"]["cpu_us_per_span"] / best["connectors-off"]["cpu_us_per_span"]
    memory = max(r.get("prometheus_rss_mib", 0.0) for r in runs["connectors-on"])
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
            "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        },
        "rounds": args.rounds,
        "traces": args.traces,
        "spans": spans,
        "runs": runs,
        "best": best,
        "cpu_ratio_on_off": round(ratio, 3),
        "connectors_added_cpu": round(ratio - 1, 3),
        "prometheus_rss_mib": memory,
        "budget": {"added_cpu": CPU_BUDGET, "prometheus_mib": MEMORY_BUDGET_MIB},
        "within_budget": ratio - 1 <= CPU_BUDGET and memory <= MEMORY_BUDGET_MIB,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'configuration':16} {'collector CPU us/span':>22} {'Prometheus RSS MiB':>19}")
    for name, result in best.items():
        print(
            f"{name:16} {result['cpu_us_per_span']:>22.2f} {result.get('prometheus_rss_mib', '-'):>19}"
        )
    print(
        f"connectors add {100 * (ratio - 1):.1f}% collector CPU per span (budget {100 * CPU_BUDGET:.0f}%); "
        f"Prometheus {memory:.0f} MiB (budget {MEMORY_BUDGET_MIB} MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
