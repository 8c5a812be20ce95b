"""The layer contracts of DESIGN.md section 2, kept by import-linter (as kopf does for itself)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_are_kept(tmp_path: Path) -> None:
    # import-linter puts its working directory first on sys.path; from the repo root the
    # kvnode/ source root would shadow the kvnode package, so run it from elsewhere.
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), str(REPO / "pyproject.toml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
