"""The CLI surface (parsers, help) and the load generator's pure parts."""

from __future__ import annotations

import io
import random

import pytest

from kvnode.bench import BenchConfig, Result, key_sampler, percentile, table
from kvnode.process.config import OPTIONS
from kvtrace.cli import build_parser

pytestmark = pytest.mark.unit


def test_node_serve_help_documents_every_flag_and_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["node", "serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for opt in OPTIONS:
        assert opt.flag in text and opt.env in text, opt.flag


def test_bench_help_describes_every_flag() -> None:
    (bench,) = [action.choices["bench"] for action in build_parser()._subparsers._group_actions]  # type: ignore[union-attr]
    for action in bench._actions:
        assert action.help and len(action.help) > 10, (
            f"kvtrace bench {action.option_strings}: no help"
        )


def test_bench_progress_is_in_place_on_a_terminal_and_every_5_s_in_a_log() -> None:
    from kvnode.cli import _progress_printer

    class Stream(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    log, terminal = Stream(False), Stream(True)
    show_log, show_terminal = _progress_printer(log), _progress_printer(terminal)
    for elapsed in (1.0, 2.0, 5.0, 6.0, 10.5):
        show_log(elapsed, 20, int(elapsed * 100), 0)
        show_terminal(elapsed, 20, int(elapsed * 100), 0)
    assert log.getvalue().splitlines() == [
        "kvtrace bench:   5.0/20 s, 500 operations (100/s), 0 errors",
        "kvtrace bench:  10.5/20 s, 1,050 operations (100/s), 0 errors",
    ]
    assert terminal.getvalue().count("\r") == 5 and "\n" not in terminal.getvalue()


def test_commands_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["kv", "put", "--endpoint", "http://h:7070", "--consistency", "all", "k", "v"]
    )
    assert (args.kv_op, args.key, args.value, args.consistency) == ("put", "k", "v", "all")
    args = parser.parse_args(
        ["bench", "--endpoint", "a", "--endpoint", "b", "--distribution", "zipfian", "--ops", "10"]
    )
    assert args.endpoints == ["a", "b"] and args.ops == 10
    args = parser.parse_args(["node", "serve", "--data-dir", "/d"])
    assert args.data_dir == "/d" and args.peers is None


def test_zipfian_keys_are_skewed_and_uniform_keys_are_not() -> None:
    zipf = key_sampler(
        BenchConfig(endpoints=["x"], keys=1000, distribution="zipfian"), random.Random(1)
    )
    uniform = key_sampler(BenchConfig(endpoints=["x"], keys=1000), random.Random(1))
    for sample, lo, hi in ((zipf, 0.25, 1.0), (uniform, 0.0, 0.05)):
        counts: dict[int, int] = {}
        for _ in range(20000):
            k = sample()
            assert 0 <= k < 1000
            counts[k] = counts.get(k, 0) + 1
        top10 = sum(sorted(counts.values(), reverse=True)[:10]) / 20000
        assert lo <= top10 <= hi


def test_bench_bounds_and_percentiles() -> None:
    for bad in (
        dict(clients=0),
        dict(duration=0),
        dict(duration=601),
        dict(write_ratio=2),
        dict(keys=0),
        dict(distribution="normal"),
        dict(target="redis"),
    ):
        with pytest.raises(ValueError):
            BenchConfig(endpoints=["x"], **bad).validate()  # type: ignore[arg-type]
    values = [i / 1000 for i in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(0.05, abs=0.002)
    assert percentile(values, 0.99) == pytest.approx(0.099, abs=0.002)
    assert percentile([], 0.5) == 0.0
    assert "ops/s" in table([])


def test_bench_table_keeps_long_run_names_whole_and_aligned() -> None:
    result = Result(
        target="kvtrace",
        clients=1,
        seconds=1.0,
        ops=10,
        errors=0,
        ops_per_s=10.0,
        p50_ms=1.0,
        p95_ms=2.0,
        p99_ms=3.0,
    )
    names = ["etcd (JSON gateway) unloaded_writes", "kvtrace tracing=off reads"]
    lines = table([(name, result) for name in names]).splitlines()
    assert [line.split("  ")[0].rstrip() for line in lines[2:]] == names
    assert len({len(line) for line in lines}) == 1  # every row as wide as the header
