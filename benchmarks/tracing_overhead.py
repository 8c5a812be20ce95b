"""Benchmark: what tracing costs the KV workload, through the real collector, in one run.

    .venv/bin/python benchmarks/tracing_overhead.py [--duration 5] [--clients 32] [--keys 2000]
        [--modes production] [--node-env OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048 ...]
        [--paired 7 [--paired-rate 400] [--skip-sequential] [--before DIR [--before-modes M]]]

Four configurations of a 3-node cluster, each started fresh with exactly the environment and
tracing flags the operator renders (`otel_environment`, `node_trace_flags`; see
tests/tracing/tracing_stack.py's `start_kv_nodes`) for its TracingPipeline:

- `untraced`: no pipeline (`OTEL_SDK_DISABLED=true`);
- `production`: the default pipeline (sampling mode production, ratio 0.1): the SDK keeps every
  span (`parentbased_always_on`) and the collector's `tail_sampling` decides;
- `head-0.1`: sampling mode head, ratio 0.1: the SDK keeps a tenth of the traces;
- `retroactive-0.1`: sampling mode retroactive, ratio 0.1: the nodes record every operation,
  export the tenth the trace-id rule keeps at once and hold the rest until the operation ends
  (every failed or slow one kept; none here). Its buffers' counts (`kvnode_trace_buffer_*`)
  are reported: `overflow` above 0 would mean the buffer bound cost traces.

The traced ones send to the real `otelcol-kvtrace` running the rendered collector config, which
exports to Jaeger v2 running the rendered Jaeger config (tests/tracing/tracing_stack.py starts
them, rewriting only endpoints and ports for loopback; with the default `security.auth` the
collector reads a token file written by `kvtrace.devstack.otlp_token` and the nodes send it). The workload and its measurement are
benchmarks/kv.py's (`Cluster.measure` via `run_rounds`: preload, QUORUM writes, QUORUM reads, unloaded writes, with the
servers' CPU per operation). Also reported: the collector's CPU per operation and the share of
the spans the nodes created (3 per QUORUM write, 2 per QUORUM read) that reached the collector,
and how many did not (dropped in the node's export queue, whose size the rendered environment
sets with OTEL_BSP_MAX_QUEUE_SIZE = 16384, or refused); the preload's 0.1 s warm-up after the
preload is not counted, so a few percent above 100% (0 missing) means nothing was dropped.
Prints a JSON document, a table of every phase, and a short table of the ratios to `untraced`
(throughput, node CPU per operation, unloaded write p50). Not a test: it only reports.

`--paired ROUNDS` adds the measurement that holds on a loaded machine (`run_paired`): the
modes' clusters all run at once and get the same paced writes, then reads, at the same
moments; per round each mode's node CPU per operation is divided by untraced's from the same
seconds, so whatever else loads the machine cancels in the ratio. `--before DIR` (with
`--paired`) adds, for each traced mode, a cluster `MODE@before` whose nodes import the `kvnode`
package of DIR (a checkout of the code before a change: `DIR/kvnode/kvnode`), loaded at the same
moments: an A/B of two versions of the node in the same seconds (`ratio_to_before`);
`--before-modes` limits the twins to some of the traced modes (fewer clusters on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "tracing")]

from kv import Cluster, cpu_seconds, run_rounds  # noqa: E402 - benchmarks/kv.py
from paced_load import Target, paced_load, ratio_estimate  # noqa: E402 - tests/tracing
from tracing_stack import kvcluster, loopback_config, pipeline, start_kv_nodes, stop_kv_nodes  # noqa: E402

from kvnode.bench import Result, table  # noqa: E402
from kvtrace.devstack.backends import Collector, Jaeger  # noqa: E402
from kvtrace.devstack.local_tls import local_tls  # noqa: E402
from kvtrace.devstack.otlp_token import local_token  # noqa: E402
from kvtrace.devstack.podrunner import ALLOCATOR  # noqa: E402
from kvtrace_operator.render import render_collector_config, render_jaeger_config  # noqa: E402

MODES: dict[str, dict[str, Any] | None] = {
    "untraced": None,
    "production": {"sampling": {"mode": "production"}},
    "head-0.1": {"sampling": {"mode": "head", "ratio": 0.1}},
    "retroactive-0.1": {"sampling": {"mode": "retroactive", "ratio": 0.1}},
}
# Spans per operation when nothing is dropped: a QUORUM write with replication factor 3 is the
# coordinator's SERVER span plus the SERVER span of each peer replica (2 peers; the coordinator
# applies its own copy in-process); a QUORUM read asks one peer.
SPANS_PER_WRITE, SPANS_PER_READ = 3, 2


def metric_sum(url: str, prefix: str) -> float:
    """The sum of the samples whose line starts with `prefix` on a loopback /metrics page."""
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def accepted_spans(collector: Collector) -> float:
    url = f"http://{collector.endpoint('metrics')}/metrics"
    return metric_sum(url, "otelcol_receiver_accepted_spans_total{")


def buffer_counts(nodes: list[Any]) -> dict[str, float]:
    """Retroactive sampling: the nodes' buffer outcomes and KEEP frames, summed."""
    out = {}
    for outcome in ("kept", "dropped", "expired", "overflow"):
        needle = f'kvnode_trace_buffer_spans_total{{outcome="{outcome}"}} '
        out[outcome] = sum(metric_sum(f"{n.url}/metrics", needle) for n in nodes)
    out["keeps_sent"] = sum(
        metric_sum(f"{n.url}/metrics", "kvnode_trace_keeps_sent_total ") for n in nodes
    )
    return out


@dataclass
class ModeStack:
    """One mode's running 3-node cluster, with its collector (None when untraced)."""

    name: str
    spec: dict[str, Any] | None
    nodes: list[Any]
    collector: Collector | None


BEFORE = "@before"  # suffix of a mode whose nodes run the code of --before DIR


@contextmanager
def mode_stack(
    name: str, spec: dict[str, Any] | None, root: Path, args: argparse.Namespace
) -> Iterator[ModeStack]:
    """Start the mode's Jaeger, collector and nodes with the rendered configuration; stop them
    on exit (the nodes first). A `MODE@before` mode's nodes import `kvnode` from --before."""
    extra = dict(kv.split("=", 1) for kv in args.node_env)
    if name.endswith(BEFORE):
        extra["PYTHONPATH"] = str(Path(args.before).resolve() / "kvnode")
    pipe = pipeline(**spec) if spec is not None else None
    backends: list[Any] = []
    nodes: list[Any] = []
    try:
        collector = None
        token = local_token(root / "otlp-token")
        tls = (
            local_tls(root / "tls", pipe) if pipe is not None else None
        )  # TLS on by default, like auth
        if pipe is not None and tls is not None:
            jaeger = Jaeger(
                loopback_config(render_jaeger_config(pipe), tls=tls, leaf=tls.jaeger_leaf()),
                ca_file=tls.ca_file if tls.enabled else None,
                workdir=root / "jaeger",
                name="jaeger",
            )
            backends.append(jaeger)
            jaeger.start()
            collector = Collector(
                loopback_config(
                    render_collector_config(pipe),
                    jaeger_otlp_grpc=jaeger.otlp_grpc,
                    token_file=token.file,
                    tls=tls,
                    leaf=tls.edge_leaf(),
                ),
                workdir=root / "collector",
                name="collector",
            )
            backends.append(collector)
            collector.start()
        nodes = start_kv_nodes(
            root,
            [ALLOCATOR.allocate() for _ in range(3)],
            kvcluster(3),
            pipe,
            collector.otlp_http if collector else None,
            secrets=token.secrets(pipe) if pipe is not None else None,
            tls=tls,
            extra=extra,
        )
        yield ModeStack(name, spec, nodes, collector)
    finally:
        stop_kv_nodes(nodes)
        for backend in reversed(backends):
            backend.stop()


def run_mode(
    name: str, spec: dict[str, Any] | None, root: Path, args: argparse.Namespace
) -> dict[str, Any]:
    with mode_stack(name, spec, root, args) as stack:
        nodes, collector = stack.nodes, stack.collector
        procs: list[Any] = [n.process for n in nodes]  # Process has the .pid kv.cpu_seconds reads
        collector_procs: list[Any] = [collector.process] if collector else []
        cpu0 = cpu_seconds(collector_procs)
        cluster = Cluster(name, "kvtrace", procs, [n.url for n in nodes])
        run_rounds([cluster], args)
        phases = cluster.median()
        out: dict[str, Any] = {
            "sampler": nodes[0].env.get("OTEL_TRACES_SAMPLER", "(SDK disabled)"),
            "phases": phases,
        }
        if spec is not None and spec["sampling"]["mode"] == "retroactive":
            out["buffer_spans"] = buffer_counts(nodes)
        if collector is not None:
            # the nodes' batch processors export on a timer: let them hand over the rest
            for n in nodes:
                assert n.process is not None
                n.process.stop(timeout=20)  # SIGTERM: the node flushes its spans before exiting
            # every round made spans, not only the median one reported
            writes = args.keys + sum(
                r.ops for phase, runs in cluster.runs.items() if "write" in phase for r in runs
            )
            reads = sum(
                r.ops for phase, runs in cluster.runs.items() if "read" in phase for r in runs
            )
            expected = SPANS_PER_WRITE * writes + SPANS_PER_READ * reads
            out["collector_cpu_us_per_op"] = round(
                (cpu_seconds(collector_procs) - cpu0) / (writes + reads) * 1e6, 1
            )
            accepted = accepted_spans(collector)
            out["spans_expected"] = expected
            out["spans_reaching_collector"] = round(accepted / expected, 3)
            out["spans_dropped"] = max(0, round(expected - accepted))
        return out


def run_paired(modes: list[str], root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every mode's cluster running at once, loaded with the same paced writes, then reads,
    at the same moments (tests/tracing/paced_load.py): per round, each mode's node CPU per
    operation divided by untraced's in the same seconds, so the machine's other load cancels;
    summarised as a geometric mean with one-sided 95% bounds over the rounds."""
    with ExitStack() as running:
        stacks = []
        for name in modes:
            (root / f"paired-{name}").mkdir()
            spec = MODES[name.removesuffix(BEFORE)]
            stacks.append(
                running.enter_context(mode_stack(name, spec, root / f"paired-{name}", args))
            )
        targets = [
            Target(st.name, [n.url for n in st.nodes], [n.process.pid for n in st.nodes])
            for st in stacks
        ]
        per_round: dict[str, dict[str, list[float]]] = {
            kind: {name: [] for name in modes} for kind in ("write", "read")
        }
        for r in range(args.paired):
            for kind, write_ratio in (("write", 1.0), ("read", 0.0)):
                phases = paced_load(
                    targets,
                    ops=int(args.paired_rate * args.duration),
                    rate=args.paired_rate,
                    write_ratio=write_ratio,
                    keys=args.keys,
                    seed=r + 1,
                )
                for name, phase in phases.items():
                    if phase.errors:
                        raise RuntimeError(f"{name} {kind}s: {phase.errors[:3]}")
                    per_round[kind][name].append(phase.cpu_us_per_op)
        out: dict[str, Any] = {
            "rate_per_s": args.paired_rate,
            "rounds": args.paired,
            "node_cpu_us_per_op": per_round,
            "ratio_to_untraced": {},
        }
        for name in modes:
            if name == "untraced":
                continue
            for kind in ("write", "read"):
                out["ratio_to_untraced"].setdefault(name, {})[f"node CPU per {kind}"] = (
                    paired_ratio(per_round[kind][name], per_round[kind]["untraced"])
                )
                if name + BEFORE in modes:
                    out.setdefault("ratio_to_before", {}).setdefault(name, {})[
                        f"node CPU per {kind}"
                    ] = paired_ratio(per_round[kind][name], per_round[kind][name + BEFORE])
        return out


def paired_ratio(mine: list[float], base: list[float]) -> dict[str, Any]:
    """Round by round `mine / base`, summarised (geometric mean, one-sided 95% bounds)."""
    ratios = [m / b for m, b in zip(mine, base)]
    est = ratio_estimate(ratios)
    return {
        "point": round(est.point, 3),
        "low95": round(est.low, 3),
        "high95": round(est.high, 3),
        "rounds": [round(x, 3) for x in ratios],
    }


def ratios_to_untraced(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per traced mode: throughput, node CPU per operation and unloaded write p50, each divided
    by the untraced run's (empty without an untraced run)."""
    base = results.get("untraced")
    ratios: dict[str, dict[str, float]] = {}
    if base is None:
        return ratios
    for name, res in results.items():
        if res is base:
            continue
        mine = ratios[name] = {}
        for phase in ("writes", "reads"):
            ours, theirs = res["phases"][phase], base["phases"][phase]
            if theirs.ops_per_s:
                mine[f"{phase} ops/s"] = round(ours.ops_per_s / theirs.ops_per_s, 3)
            cpu = theirs.by_operation.get("server_cpu_us_per_op", {}).get("value")
            if cpu:
                mine[f"node CPU per {phase[:-1]}"] = round(
                    ours.by_operation["server_cpu_us_per_op"]["value"] / cpu, 3
                )
        unloaded, base_unloaded = (
            res["phases"]["unloaded_writes"],
            base["phases"]["unloaded_writes"],
        )
        if base_unloaded.p50_ms:
            mine["unloaded write p50"] = round(unloaded.p50_ms / base_unloaded.p50_ms, 3)
    return ratios


def ratio_table(ratios: dict[str, dict[str, float]]) -> str:
    """Rows: the measures; columns: the traced modes; cells: ratio to untraced."""
    modes = list(ratios)
    measures = list(dict.fromkeys(m for r in ratios.values() for m in r))
    head = f"{'ratio to untraced':<24}" + "".join(f" {mode:>12}" for mode in modes)
    lines = [head, "-" * len(head)]
    for measure_ in measures:
        cells = "".join(
            f" {ratios[mode][measure_]:>12.3f}" if measure_ in ratios[mode] else f" {'-':>12}"
            for mode in modes
        )
        lines.append(f"{measure_:<24}{cells}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="loaded measurements per mode (the median is reported)",
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of " + ",".join(MODES))
    parser.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also set this in the nodes' environment, over the rendered one (to compare a setting, "
        "e.g. OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048); repeatable",
    )
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also run every mode's cluster at once under the same paced load for ROUNDS rounds "
        "(writes, then reads) and report node CPU per operation as paired ratios to untraced "
        "(needs untraced among --modes; at least 2 rounds)",
    )
    parser.add_argument(
        "--paired-rate",
        type=float,
        default=400.0,
        help="operations per second sent to each cluster in the paired run",
    )
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="with --paired: also run each traced mode as MODE@before, its nodes importing the "
        "kvnode package of DIR (a checkout of the code before a change), in the same rounds",
    )
    parser.add_argument(
        "--before-modes",
        metavar="MODES",
        help="with --before: the comma list of traced modes that get a MODE@before twin "
        "(default: every traced mode of --modes)",
    )
    parser.add_argument(
        "--skip-sequential",
        action="store_true",
        help="only the paired run (no closed-loop measurement of each mode in turn)",
    )
    args = parser.parse_args()
    for kv in args.node_env:
        if "=" not in kv or not kv.split("=", 1)[0]:
            parser.error(f"--node-env: expected NAME=VALUE, got {kv!r}")
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"--modes: unknown {', '.join(unknown)}; expected some of {', '.join(MODES)}")
    if args.paired and ("untraced" not in modes or args.paired < 2):
        parser.error("--paired: needs untraced among --modes and at least 2 rounds")
    paired_modes = modes
    if args.before is not None:
        if not args.paired:
            parser.error("--before: needs --paired (the A/B runs in the same rounds)")
        if not (Path(args.before) / "kvnode" / "kvnode" / "__init__.py").is_file():
            parser.error(f"--before: expected a checkout with kvnode/kvnode/, got {args.before!r}")
        twins = args.before_modes.split(",") if args.before_modes else modes
        if unknown := [m for m in twins if m not in modes or m == "untraced"]:
            parser.error(f"--before-modes: {', '.join(unknown)} not a traced mode of --modes")
        paired_modes = modes + [m + BEFORE for m in twins if m != "untraced"]
    results: dict[str, dict[str, Any]] = {}
    paired: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="kvtrace-tracing-bench-") as tmp:
        if not args.skip_sequential:
            for name in modes:
                root = Path(tmp) / name
                root.mkdir()
                results[name] = run_mode(name, MODES[name], root, args)
        if args.paired:
            paired = run_paired(paired_modes if args.before is not None else modes, Path(tmp), args)
    ratios = ratios_to_untraced(results)
    doc = {
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "clients": args.clients,
        "duration_s": args.duration,
        "keys": args.keys,
        "value_bytes": 100,
        "consistency": "quorum",
        "node_env": dict(kv.split("=", 1) for kv in args.node_env),
        "before": args.before,
        "results": {
            name: {
                **{k: v for k, v in res.items() if k != "phases"},
                "phases": {p: r.as_dict() for p, r in res["phases"].items()},
            }
            for name, res in results.items()
        },
        "ratios": ratios,
        **({"paired": paired} if paired is not None else {}),
    }
    print(json.dumps(doc, indent=2))
    rows: list[tuple[str, Result]] = [
        (f"{name} {phase}", r)
        for name, res in results.items()
        for phase, r in res["phases"].items()
    ]
    print(table(rows))
    for name, res in results.items():
        cpu = ", ".join(
            f"{phase} {r.by_operation.get('server_cpu_us_per_op', {}).get('value', 0):.0f}"
            for phase, r in res["phases"].items()
        )
        extra = ""
        if "collector_cpu_us_per_op" in res:
            extra = (
                f"; collector CPU {res['collector_cpu_us_per_op']:.0f} µs/op; "
                f"spans reaching the collector {res['spans_reaching_collector']:.1%} "
                f"({res['spans_dropped']} of {res['spans_expected']} missing)"
            )
        print(f"{name} ({res['sampler']}): node CPU µs/op {cpu}{extra}")
    print(ratio_table(ratios))
    if paired is not None:
        print(f"paired, {paired['rounds']} rounds at {paired['rate_per_s']:g} ops/s per cluster:")
        for key in ("ratio_to_untraced", "ratio_to_before"):
            for name, measures in paired.get(key, {}).items():
                for measure_, est in measures.items():
                    print(
                        f"  {name} {measure_}, {key.replace('_', ' ')}: {est['point']:.3f} "
                        f"(95%: {est['low95']:.3f}-{est['high95']:.3f})"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
