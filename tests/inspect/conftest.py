"""Fixtures of the inspection tests (the operator fixtures come from
kvtrace.devstack.operator_fixtures, registered in tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

KVTRACE = str(Path(sys.executable).parent / "kvtrace")


@pytest.fixture
def kvtrace_cli(local_cluster: Any) -> Any:
    """``kvtrace_cli(*args)`` runs the kvtrace console script against the local cluster."""

    def run(
        *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KVTRACE, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**local_cluster.env(), **(env or {})},
        )

    return run
