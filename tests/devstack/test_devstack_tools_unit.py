"""`kvtrace dev tools` progress and prerequisites, on fake tools in a temporary cache (no Go
build runs here): "N of M" with the expected and the elapsed time, and a one-line error naming
a missing program before anything is built."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvtrace.cli import main
from kvtrace.devstack import tools

pytestmark = pytest.mark.unit


def fake_tool(name: str, built: list[str]) -> tools.Tool:
    def build(out: Path, scratch: Path) -> None:
        built.append(name)
        script = out / name
        script.write_text("#!/bin/sh\necho fake\n")
        script.chmod(0o755)

    return tools.Tool(name, "1.0.0", (name,), build)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two fake tools (``kubernetes`` with its expected build time, ``other`` without) in a
    temporary cache; returns the names built, in order."""
    built: list[str] = []
    monkeypatch.setenv("KVTRACE_TOOLS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tools, "TOOLS", {n: fake_tool(n, built) for n in ("kubernetes", "other")})
    return built


def fake_go(directory: Path, version: str) -> None:
    directory.mkdir(exist_ok=True)
    go = directory / "go"
    go.write_text(f"#!/bin/sh\necho {version}\n")
    go.chmod(0o755)


def test_progress_says_n_of_m_with_expected_and_elapsed_time(
    fakes: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_go(tmp_path / "bin", "go1.26.8")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    tools.ensure_all()
    out = capsys.readouterr().out.splitlines()
    assert fakes == ["kubernetes", "other"]
    assert out[0] == (
        "[tools] 1 of 2: kubernetes 1.0.0: building (not built, about 4m59s cold on 2 idle cores)"
    )
    assert out[1].startswith("[tools] 1 of 2: kubernetes 1.0.0: built in 0s, ") and out[1].endswith(
        "s since the start"
    )
    assert out[2] == "[tools] 2 of 2: other 1.0.0: building (not built)"
    tools.ensure_all()
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"[tools] 1 of 2: kubernetes 1.0.0: cached at {tools.TOOLS['kubernetes'].directory}",
        f"[tools] 2 of 2: other 1.0.0: cached at {tools.TOOLS['other'].directory}",
    ]


@pytest.mark.parametrize(
    ("go_version", "message"),
    [
        (
            None,
            "Go 1.26 is needed to build kubernetes, other, and `go` is not on PATH (README.md, "
            "Prerequisites)",
        ),
        (
            "go1.24.3",
            "Go 1.26 or newer is needed to build kubernetes, other (GOTOOLCHAIN=local), `go` "
            "on PATH is go1.24 (README.md, Prerequisites)",
        ),
    ],
)
def test_a_missing_prerequisite_is_one_line_and_nothing_is_built(
    fakes: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    go_version: str | None,
    message: str,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if go_version:
        fake_go(bin_dir, go_version)
    monkeypatch.setenv("PATH", str(bin_dir))  # no other go
    assert main(["dev", "tools"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"kvtrace dev tools: error: {message}\n"
    assert fakes == []


def test_a_second_run_waits_for_the_first_build_and_then_finds_it_cached(
    fakes: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two concurrent callers (threads here; processes hold the same file lock): the tool is
    built once, the second caller says it waits and then reports it cached."""
    import threading

    release = threading.Event()
    entered = threading.Event()
    slow = tools.TOOLS["kubernetes"]

    def build(out: Path, scratch: Path) -> None:
        entered.set()
        assert release.wait(10)
        slow.build(out, scratch)

    tool = tools.Tool(slow.name, slow.version, slow.binaries, build)
    first = threading.Thread(target=tools.ensure, args=(tool,))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=tools.ensure, args=(tool,))
    second.start()
    out, deadline = "", time.monotonic() + 10
    while "waiting for another build" not in out and time.monotonic() < deadline:
        out += capsys.readouterr().out  # poll until the second caller blocks on the lock
        time.sleep(0.01)
    release.set()
    first.join(10)
    second.join(10)
    out += capsys.readouterr().out
    assert fakes == ["kubernetes"]
    assert "waiting for another build" in out
    assert out.rstrip().endswith(f"cached at {tool.directory}")


def test_the_collector_cache_key_changes_with_its_manifest(tmp_path: Path) -> None:
    for name in ("builder-config.yaml", "go.sum"):
        (tmp_path / name).write_text("a\n")
    (tmp_path / "stubs" / "x").mkdir(parents=True)
    (tmp_path / "stubs" / "x" / "go.mod").write_text("module x\n")
    before = tools.otelcol_build_id(tmp_path)
    assert before.startswith(f"{tools.OTELCOL_VERSION}-") and before == tools.otelcol_build_id(
        tmp_path
    )
    (tmp_path / "builder-config.yaml").write_text("b\n")
    assert tools.otelcol_build_id(tmp_path) != before


def test_importing_the_module_reads_no_input_file(tmp_path: Path) -> None:
    """The collector image imports tools.py with only the collector's inputs copied in: the
    repository-digest cache keys (collector, etcdload) are computed when first asked for."""
    module = tmp_path / "src" / "kvtrace" / "devstack" / "tools.py"
    module.parent.mkdir(parents=True)
    module.write_text(Path(tools.__file__).read_text())
    script = (
        "import sys; sys.path.insert(0, 'src/kvtrace/devstack'); import tools\n"
        "try:\n"
        "    tools.TOOLS['etcdload'].version\n"
        "except FileNotFoundError as exc:\n"
        "    print('etcdload key asked:', exc.filename)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("etcdload key asked:") and "etcdload" in done.stdout


def test_a_computed_cache_key_is_computed_once_when_asked() -> None:
    calls: list[int] = []

    def key() -> str:
        calls.append(1)
        return "1.0-abc"

    tool = tools.Tool("x", key, ("x",), lambda out, scratch: None)
    assert calls == []
    assert tool.version == "1.0-abc" and tool.version == "1.0-abc"
    assert calls == [1]
    assert tool.directory.name == "x-1.0-abc"
    assert tools.Tool("y", "2.0", ("y",), lambda out, scratch: None).version == "2.0"


def test_list_aligns_columns_for_long_versions(
    fakes: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    long = tools.Tool("otelcol", lambda: "0.161.0-75db2984f4", ("otelcol",), lambda o, s: None)
    monkeypatch.setitem(tools.TOOLS, "otelcol", long)
    assert main(["dev", "tools", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["TOOL", "kubernetes", "other", "otelcol"]
    assert lines[3].split()[1:3] == ["0.161.0-75db2984f4", "not"]
    # Every column starts at the same offset on every line, whatever the version's length.
    for header in ("VERSION", "STATE", "DIRECTORY"):
        column = lines[0].index(header)
        assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)
    assert lines[3].endswith(str(long.directory))


def test_table_pads_each_column_to_its_longest_cell() -> None:
    assert tools.table([("a", "bbb", "c"), ("aaaa", "b", "cc")]) == [
        "a     bbb  c",
        "aaaa  b    cc",
    ]
    assert tools.table([]) == []
