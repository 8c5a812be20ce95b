"""The node's hot path runs compiled (mypyc, built by the normal install) unless
KVNODE_PURE_PYTHON=1 selects the pure-Python sources; the same test vectors pass both ways."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvnode import implementation

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
# The pure functions' test vectors (HTTP parsing, commit log framing and recovery, membership
# states, the trace buffer's peer frames), run again against the pure-Python modules.
VECTOR_FILES = [
    "tests/kvnode/test_kv_http_parse_unit.py",
    "tests/kvnode/test_kv_commitlog_unit.py",
    "tests/kvnode/test_kv_membership_unit.py",
    "tests/kvnode/test_tracing_retro_unit.py",
    "tests/kvnode/test_kv_implementation_unit.py",
]
ACTIVE = "import kvnode.implementation as i; print(i.active())"
# Sources edited after an in-place build run pure, with a warning (a developer's tree; never a
# fresh install): what the compiled-install checks below then expect.
STALE = implementation.stale_modules(Path(implementation.__file__).parent)


def _python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter (outside the repository, where the kvnode/ source root would shadow
    the installed package) with ``env`` on top of this one's."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_flag_reads_on_off_and_names_the_variable_otherwise() -> None:
    assert implementation.flag("X", "1") and implementation.flag("X", " TRUE ")
    assert not implementation.flag("X", None) and not implementation.flag("X", "0")
    assert not implementation.flag("X", "")
    with pytest.raises(ValueError, match=r"KVNODE_PURE_PYTHON: expected one of .* got 'maybe'"):
        implementation.flag("KVNODE_PURE_PYTHON", "maybe")


def test_this_process_runs_what_its_environment_selects() -> None:
    pure = implementation.flag("KVNODE_PURE_PYTHON", os.environ.get("KVNODE_PURE_PYTHON"))
    built_pure = implementation.flag("KVTRACE_BUILD_PURE", os.environ.get("KVTRACE_BUILD_PURE"))
    assert implementation.active() == ("pure" if pure or built_pure or STALE else "compiled")


@pytest.mark.skipif(
    implementation.flag("KVTRACE_BUILD_PURE", os.environ.get("KVTRACE_BUILD_PURE")),
    reason="KVTRACE_BUILD_PURE=1: installed without the compiled modules",
)
@pytest.mark.skipif(bool(STALE), reason=f"sources edited since the in-place build: {STALE}")
def test_the_install_compiled_the_hot_path_and_the_variable_selects_it(tmp_path: Path) -> None:
    compiled = _python(ACTIVE, tmp_path, KVNODE_PURE_PYTHON="0")
    assert compiled.returncode == 0 and compiled.stdout.strip() == "compiled", compiled.stderr
    pure = _python(ACTIVE, tmp_path, KVNODE_PURE_PYTHON="1")
    assert pure.returncode == 0 and pure.stdout.strip() == "pure", pure.stderr
    bad = _python(ACTIVE, tmp_path, KVNODE_PURE_PYTHON="maybe")
    assert bad.returncode != 0 and "KVNODE_PURE_PYTHON: expected" in bad.stderr


def test_a_source_newer_than_its_extension_is_stale(tmp_path: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (tmp_path / "transport").mkdir()
    frames, built = tmp_path / "transport" / "frames.py", tmp_path / "transport" / f"frames{suffix}"
    keys = tmp_path / "keys.py"  # a source without an extension is not stale: it runs as is
    for path in (frames, built, keys):
        path.write_text("")
    os.utime(built, (1_000_000, 1_000_000))
    os.utime(frames, (1_000_000 + implementation.STALE_AFTER_S / 2,) * 2)
    assert implementation.stale_modules(tmp_path) == []
    os.utime(frames, (1_000_000 + implementation.STALE_AFTER_S * 2,) * 2)
    assert implementation.stale_modules(tmp_path) == ["kvnode.transport.frames"]


@pytest.mark.skipif(
    implementation.active() == "pure", reason="this run already tests the pure-Python modules"
)
def test_the_same_vectors_pass_against_the_pure_python_modules() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "unit", "-p", "no:cacheprovider"]
        + VECTOR_FILES,
        cwd=REPO,
        env={**os.environ, "KVNODE_PURE_PYTHON": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
