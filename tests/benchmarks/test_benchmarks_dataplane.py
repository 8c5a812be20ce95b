"""The benchmarks run end to end (tiny and bounded), so a change elsewhere cannot leave them
broken until the next time somebody measures: each prints its JSON, its table and its ratios
against the peer of the same run (etcd; the untraced node)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvtrace.devstack.pytest_plugin import require_binaries

pytestmark = pytest.mark.dataplane

REPO = Path(__file__).resolve().parents[2]
TINY = ["--duration", "0.5", "--keys", "100", "--clients", "4"]


def run_benchmark(script: str, *args: str) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *TINY, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The JSON document comes first (it ends at the first line that is a lone "}"), then the table.
    end = proc.stdout.index("\n}\n") + 2
    return json.loads(proc.stdout[:end]), proc.stdout[end:]


def test_kv_benchmark_compares_with_etcd_in_the_same_run() -> None:
    require_binaries("etcd")
    report, text = run_benchmark("kv.py", "--rounds", "1", "--tracing", "off")
    assert report["machine"]["cpus"] >= 1
    # etcd through both paths (JSON gateway, gRPC with etcd's Go client), with what differs
    for path in ("etcd (JSON gateway)", "etcd (gRPC, Go client)"):
        assert f"kvtrace tracing=off / {path} writes:" in text
        assert f"kvtrace tracing=off / {path} reads:" in text
        assert report["results"][path]["writes"]["ops"] > 0
        assert report["results"][path]["reads"]["errors"] == 0
    assert "etcd is linearizable" in text and "Dynamo-style" in text
    assert "ops/s" in text and "p99" in text
    # The same cluster with TLS and client tokens (--secure off is the default): its cost per op.
    assert "TLS + token cost, kvtrace tracing=off: writes" in text
    assert report["tls_cost_server_cpu_us_per_op"]["kvtrace tracing=off"]["reads"]["tls"] > 0


def test_tracing_overhead_benchmark_prints_ratios_of_four_modes_in_one_run() -> None:
    require_binaries("otelcol-kvtrace", "jaeger")
    report, text = run_benchmark("tracing_overhead.py")
    results = report["results"]
    assert set(results) == {"untraced", "production", "head-0.1", "retroactive-0.1"}
    for name, result in results.items():
        for phase in ("writes", "reads", "unloaded_writes"):
            assert result["phases"][phase]["ops"] > 0, (name, phase)
            assert result["phases"][phase]["errors"] == 0, (name, phase)
    # production keeps every span in the SDK (all of them reach the collector, which decides);
    # head 0.1 sends about a tenth
    assert results["production"]["spans_reaching_collector"] >= 0.95
    assert results["head-0.1"]["spans_reaching_collector"] < 0.5
    # retroactive 0.1 records every operation but, with nothing failing or slow, sends a tenth;
    # the rest is dropped in the nodes, within the buffer's bounds
    retro = results["retroactive-0.1"]
    assert retro["spans_reaching_collector"] < 0.5
    assert retro["buffer_spans"]["dropped"] > 0 and retro["buffer_spans"]["overflow"] == 0
    assert "ratio to untraced" in text and "retroactive-0.1" in text and "head-0.1" in text


def test_tracing_overhead_node_env_must_be_name_equals_value() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "tracing_overhead.py"), "--node-env", "FOO"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "--node-env: expected NAME=VALUE, got 'FOO'" in proc.stderr
