"""The kind tier's cluster: what `make kind-up` sets up (kind/cluster.yaml, the images built
and loaded, the chart installed), so the test and a developer's cluster are made the
same way. Cluster ``$KVTRACE_KIND_CLUSTER`` (default ``kvtrace-e2e``) is reused when it
exists, and then kept; otherwise it is created, and deleted after the session."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvtrace.devstack.pytest_plugin import kind_unavailable

REPO = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("KVTRACE_KIND_CLUSTER", "kvtrace-e2e")


@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Kubeconfig of the prepared kind cluster (skips, saying why, without Docker or kind)."""
    reason = kind_unavailable()
    if reason:
        pytest.skip(f"kind tier needs Docker and kind: {reason}")
    clusters = subprocess.run(
        ["kind", "get", "clusters"], capture_output=True, text=True, check=True, timeout=60
    )
    existed = CLUSTER in clusters.stdout.split()
    try:
        subprocess.run(
            ["make", "kind-up", f"KIND_CLUSTER={CLUSTER}"], cwd=REPO, check=True, timeout=3600
        )
        kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
        config = subprocess.run(
            ["kind", "get", "kubeconfig", "--name", CLUSTER],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        kubeconfig.write_text(config.stdout)
        yield kubeconfig
    finally:
        if not existed:
            subprocess.run(
                ["kind", "delete", "cluster", "--name", CLUSTER], check=False, timeout=300
            )
