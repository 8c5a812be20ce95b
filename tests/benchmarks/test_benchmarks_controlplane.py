"""benchmarks/operator_scale.py end to end at a tiny size (4 KVClusters, 2 pipelines, one
member each; 3 minutes with its own local cluster's start on a busy 2-core machine), so a change elsewhere cannot leave it broken until the next
time somebody measures: it prints its JSON (phases, operator requests from the audit log,
RSS, flip-flops, targets) and its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvtrace.devstack.pytest_plugin import require_binaries

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]


def test_operator_scale_benchmark_measures_every_phase_at_a_tiny_size() -> None:
    require_binaries("etcd", "kube-apiserver", "kwok")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "operator_scale.py"),
            "--clusters",
            "4",
            "--pipelines",
            "2",
            "--replicas",
            "1",
            "--phase-timeout",
            "150",
            "--settle",
            "2",
            "--resync-interval",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    end = proc.stdout.index("\n}\n") + 2
    report, text = json.loads(proc.stdout[:end]), proc.stdout[end:]
    create, update, delete = (report["phases"][name] for name in ("create", "update", "delete"))
    assert create["processed_s"] is not None and create["converged_s"] is not None, create
    assert update["processed_s"] is not None and update["converged_s"] is not None, update
    assert delete["gone_s"] is not None, delete
    assert create["api_requests"] > 0 and create["api_requests_by_verb"].get("patch", 0) > 0
    assert report["flip_flops"] == [] and report["targets"]["no flip-flop"]
    assert 0 < report["rss"]["baseline_mib"] <= report["rss"]["peak_mib"]
    assert "processed s" in text and "target" in text


def test_operator_scale_benchmark_refuses_bad_sizes() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "operator_scale.py"), "--clusters", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "--clusters must be at least 1, got 0" in proc.stderr
