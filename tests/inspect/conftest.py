"""Fixtures of the inspection tests: the controlplane tier reuses the operator fixtures of
tests/operator/controlplane (the CRDs installed once, ``kvtrace operator run -n NS`` per test),
loaded under their own module name so the two conftest modules do not collide."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

KVTRACE = str(Path(sys.executable).parent / "kvtrace")


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_controlplane = _load("inspect_controlplane_fixtures",
                      Path(__file__).resolve().parents[1] / "operator" / "controlplane" / "conftest.py")
crds = _controlplane.crds
operator = _controlplane.operator
kube_ns = _controlplane.kube_ns
Kube = _controlplane.Kube


@pytest.fixture
def kvtrace_cli(local_cluster: Any) -> Any:
    """``kvtrace_cli(*args)`` runs the kvtrace console script against the local cluster."""
    def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KVTRACE, *args], capture_output=True, text=True, timeout=timeout,
                              env={**local_cluster.env(), **(env or {})})
    return run
