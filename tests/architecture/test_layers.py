"""The layer contracts of docs/design.md section 2, kept by import-linter (as kopf does for itself)."""

from __future__ import annotations

import os
import shutil
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
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_product_modules_import_without_the_development_harness(tmp_path: Path) -> None:
    # What the images hold: the three source roots without src/kvtrace/devstack (their
    # .dockerignore). Every product module must import from there, function-local imports
    # aside (import-linter sees those), and `kvtrace --help` must still work.
    for root in ("src", "kvnode", "operator"):
        shutil.copytree(
            REPO / root,
            tmp_path / root,
            ignore=shutil.ignore_patterns("devstack", "__pycache__", "Dockerfile*"),
        )
    script = (
        "import importlib, pkgutil, sys\n"
        # The editable install's finder maps kvtrace.* to this checkout: out of the way.
        "sys.meta_path[:] = [f for f in sys.meta_path\n"
        "                    if not getattr(f, '__module__', '').startswith('__editable__')]\n"
        "import kvtrace, kvnode, kvtrace_operator\n"
        "for package in (kvtrace, kvnode, kvtrace_operator):\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "assert 'kvtrace.devstack' not in sys.modules\n"
        "from kvtrace.cli import build_parser\n"
        "build_parser().parse_args(['operator', 'run', '--help'])\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(tmp_path / r) for r in ("src", "kvnode", "operator")),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usage: kvtrace operator run" in proc.stdout
