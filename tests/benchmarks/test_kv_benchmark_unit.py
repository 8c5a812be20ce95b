"""benchmarks/kv.py's pure parts: the --clients and --etcd-paths lists, the etcdload command
line and the parsing of its JSON report, the phase names and the comparison with etcd."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import kv  # benchmarks/kv.py, on sys.path above

from kvnode.bench import BenchConfig, Result

pytestmark = pytest.mark.unit

# What benchmarks/etcdload prints (a run of -clients 8 -write-ratio 0.5).
ETCDLOAD_REPORT = {
    "target": "etcd-grpc",
    "clients": 8,
    "conns": 3,
    "seconds": 2.001,
    "ops": 6402,
    "errors": 0,
    "ops_per_s": 3199.4,
    "p50_ms": 1.935,
    "p95_ms": 5.676,
    "p99_ms": 9.23,
    "by_operation": {
        "write": {"ops": 3200, "ops_per_s": 1599.2, "p50_ms": 2.5, "p99_ms": 9.9},
        "read": {"ops": 3202, "ops_per_s": 1600.2, "p50_ms": 1.1, "p99_ms": 4.0},
    },
    "error_samples": [],
}


@pytest.mark.parametrize(
    ("text", "counts"), [("32", [32]), ("32,128", [32, 128]), (" 1 , 4096 ", [1, 4096])]
)
def test_clients_is_one_count_or_a_comma_list(text: str, counts: list[int]) -> None:
    assert kv.parse_clients(text) == counts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "expected client counts within 1..4096, comma-separated (32,128), got '0'"),
        ("32,4097", "within 1..4096"),
        ("32,many", "got '32,many'"),
        ("", "got ''"),
        ("32,32", "expected each client count once, got '32,32'"),
    ],
)
def test_clients_rejects_what_is_not_a_list_of_counts(text: str, message: str) -> None:
    with pytest.raises(
        argparse.ArgumentTypeError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        kv.parse_clients(text)


def test_etcd_paths_are_json_and_grpc() -> None:
    assert kv.parse_etcd_paths("json,grpc") == ["json", "grpc"]
    assert kv.parse_etcd_paths("grpc,grpc") == ["grpc"]
    assert kv.parse_etcd_paths("") == []
    with pytest.raises(argparse.ArgumentTypeError, match="expected a comma list of json, grpc"):
        kv.parse_etcd_paths("json,http")


def test_phases_carry_the_client_count_only_when_a_run_has_several() -> None:
    assert kv.phase_key("writes", 32, [32]) == "writes"
    assert kv.phase_key("reads", 128, [32, 128]) == "reads@128"
    # benchmarks/tracing_overhead.py passes one int, kv.py a list
    assert kv.client_counts(argparse.Namespace(clients=32)) == [32]
    assert kv.client_counts(argparse.Namespace(clients=[32, 128])) == [32, 128]


def test_etcdload_command_is_the_same_workload_as_the_python_generator() -> None:
    cfg = BenchConfig(
        endpoints=["http://127.0.0.2:1", "http://127.0.0.3:2"],
        clients=128,
        duration=5.0,
        keys=2000,
        write_ratio=0.0,
        target="etcd",
    )
    cmd = kv.etcdload_command(Path("/cache/etcdload"), cfg)
    assert cmd[0] == "/cache/etcdload"
    flags = dict(zip(cmd[1::2], cmd[2::2]))
    assert flags == {
        "-api": "grpc",
        "-endpoints": "http://127.0.0.2:1,http://127.0.0.3:2",
        "-clients": "128",
        "-duration": "5.0s",
        "-keys": "2000",
        "-value-size": "100",
        "-write-ratio": "0.0",
        "-prefix": "bench/",
        "-timeout": "10.0s",
        "-seed": "1",
    }
    preload = BenchConfig(endpoints=cfg.endpoints, preload=True, target="etcd")
    assert kv.etcdload_command(Path("x"), preload)[-1] == "-preload"
    with pytest.raises(ValueError, match="uniform keys"):
        kv.etcdload_command(Path("x"), BenchConfig(endpoints=["e"], distribution="zipfian"))


def test_etcdload_command_over_http_names_the_api_and_kvtraces_consistency() -> None:
    cfg = BenchConfig(endpoints=["http://127.0.0.2:1"], consistency="all", write_ratio=1.0)
    cmd = kv.etcdload_command(Path("x"), cfg, "kvtrace")
    flags = dict(zip(cmd[1::2], cmd[2::2]))
    assert flags["-api"] == "kvtrace" and flags["-consistency"] == "all"
    assert flags["-write-ratio"] == "1.0" and flags["-endpoints"] == "http://127.0.0.2:1"
    json_gateway = kv.etcdload_command(Path("x"), cfg, "etcd-json")
    assert json_gateway[1:3] == ["-api", "etcd-json"] and "-consistency" not in json_gateway
    # etcdload speaks plain HTTP: a secured cluster is refused, not loaded without its token
    for secured in (
        BenchConfig(endpoints=["https://127.0.0.2:1"]),
        BenchConfig(endpoints=["http://127.0.0.2:1"], security=kv.Security(token="t")),
    ):
        with pytest.raises(ValueError, match="plain HTTP"):
            kv.etcdload_command(Path("x"), secured, "kvtrace")


def test_loadgen_is_a_list_of_python_and_go() -> None:
    assert kv.parse_loadgens("python,go") == ["python", "go"]
    assert kv.parse_loadgens(" go , go") == ["go"]
    for bad in ("", "rust", "python,java"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a comma list of python, go"):
            kv.parse_loadgens(bad)


def test_etcdload_report_becomes_a_result() -> None:
    result = kv.parse_etcdload(json.dumps(ETCDLOAD_REPORT))
    assert isinstance(result, Result)
    assert (result.target, result.clients, result.ops, result.errors) == ("etcd-grpc", 8, 6402, 0)
    assert (result.ops_per_s, result.p50_ms, result.p95_ms, result.p99_ms) == (
        3199.4,
        1.935,
        5.676,
        9.23,
    )
    assert result.by_operation["write"]["ops"] == 3200
    assert result.by_operation["read"]["p99_ms"] == 4.0
    assert result.by_operation["grpc_connections"] == {"value": 3}
    assert result.error_samples == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ops": None}, "'ops' expected a number, got None"),
        ({"ops": 1.5}, "'ops' expected a number, got 1.5"),
        ({"p99_ms": "9"}, "'p99_ms' expected a number, got '9'"),
        ({"conns": True}, "'conns' expected a number, got True"),
        ({"by_operation": {"write": 3}}, "'by_operation' expected an object of objects"),
        ({"error_samples": "none"}, "'error_samples' expected a list"),
    ],
)
def test_etcdload_report_with_a_bad_field_names_it(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"etcdload output: {message}"):
        kv.parse_etcdload(json.dumps({**ETCDLOAD_REPORT, **change}))


def test_etcdload_output_that_is_not_a_json_object_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one JSON document"):
        kv.parse_etcdload("etcdload: -clients: expected 1..4096, got 0")
    with pytest.raises(ValueError, match="expected a JSON object"):
        kv.parse_etcdload("[1, 2]")


def result(ops_per_s: float, cpu: float, p50: float = 1.0) -> Result:
    return Result(
        target="t",
        clients=32,
        seconds=1.0,
        ops=int(ops_per_s),
        errors=0,
        ops_per_s=ops_per_s,
        p50_ms=p50,
        p95_ms=2 * p50,
        p99_ms=3 * p50,
        by_operation={
            "server_cpu_us_per_op": {"value": cpu},
            "client_cpu": {"us_per_op": cpu / 10, "cores": 0.1},
        },
    )


def run_of(writes: float, reads: float, cpu_w: float, cpu_r: float) -> dict[str, Result]:
    return {
        "writes@32": result(writes, cpu_w),
        "reads@32": result(reads, cpu_r),
        "writes@128": result(2 * writes, cpu_w / 2),
        "reads@128": result(2 * reads, cpu_r / 2),
        "unloaded_writes": result(900, 1000, p50=0.8),
        "unloaded_reads": result(3000, 300, p50=0.2),
    }


RESULTS = {
    "kvtrace tracing=off": run_of(8000, 20000, 180, 70),
    "kvtrace tracing=head-0.1": run_of(7600, 18000, 200, 80),
    "etcd (JSON gateway)": run_of(4000, 6400, 400, 240),
    "etcd (gRPC, Go client)": run_of(5000, 10000, 300, 140),
}
GO_RESULTS = {
    **RESULTS,
    "kvtrace tracing=off (Go client)": run_of(12000, 30000, 150, 60),
    "kvtrace tracing=head-0.1 (Go client)": run_of(10800, 24000, 165, 72),
    "etcd (JSON gateway, Go client)": run_of(6000, 10000, 360, 200),
}


def test_kvtrace_is_compared_with_each_etcd_path_at_each_client_count() -> None:
    ratios = kv.vs_etcd(RESULTS, "kvtrace tracing=off")
    assert ratios["kvtrace tracing=off / etcd (JSON gateway) writes@32"] == 2.0
    assert ratios["kvtrace tracing=off / etcd (gRPC, Go client) reads@128"] == 2.0
    assert (
        ratios["kvtrace tracing=off / etcd (gRPC, Go client) writes@32 (server CPU per op)"] == 0.6
    )
    # 2 etcd paths x 2 client counts x (writes, reads) x (ops/s, CPU per op); no unloaded phase
    assert len(ratios) == 16
    assert not any("head-0.1" in label or "unloaded" in label for label in ratios)
    assert (
        kv.vs_etcd({"etcd (JSON gateway)": RESULTS["etcd (JSON gateway)"]}, "kvtrace tracing=off")
        == {}
    )


def test_each_load_generator_compares_kvtrace_with_etcd_under_the_same_generator() -> None:
    ratios = kv.vs_etcd(GO_RESULTS, "kvtrace tracing=off")
    go = "kvtrace tracing=off (Go client)"
    assert ratios[f"{go} / etcd (JSON gateway, Go client) writes@32"] == 2.0
    assert ratios[f"{go} / etcd (gRPC, Go client) reads@32"] == 3.0
    assert ratios[f"{go} / etcd (gRPC, Go client) writes@32 (server CPU per op)"] == 0.5
    # no cross-generator pair: the Go-loaded kvtrace is not set against the Python-loaded etcd
    assert f"{go} / etcd (JSON gateway) writes@32" not in ratios
    assert "kvtrace tracing=off / etcd (JSON gateway, Go client) writes@32" not in ratios
    # 16 for each generator's kvtrace
    assert len(ratios) == 32


def test_traced_ratios_stay_within_one_load_generator() -> None:
    kvtrace, etcd = kv.split_etcd(GO_RESULTS)
    assert "etcd (JSON gateway, Go client)" in etcd and len(etcd) == 3
    ratios = kv.traced_ratios("kvtrace tracing=off", kvtrace)
    go = "kvtrace tracing=off (Go client)"
    assert ratios[f"kvtrace tracing=head-0.1 (Go client) / {go} writes@32"] == 0.9
    assert ratios["kvtrace tracing=head-0.1 / kvtrace tracing=off writes@32"] == 0.95
    # the generator's own effect: the Go-loaded untraced cluster over the Python-loaded one
    assert ratios[f"{go} / kvtrace tracing=off writes@32"] == 1.5
    assert "kvtrace tracing=head-0.1 (Go client) / kvtrace tracing=off writes@32" not in ratios
    assert len(ratios) == 8 * 3


def test_traced_configurations_are_compared_with_the_untraced_one_only() -> None:
    kvtrace, etcd = kv.split_etcd(RESULTS)
    assert set(etcd) == {"etcd (JSON gateway)", "etcd (gRPC, Go client)"}
    ratios = kv.ratios_to("kvtrace tracing=off", kvtrace)
    assert ratios["kvtrace tracing=head-0.1 / kvtrace tracing=off writes@32"] == 0.95
    assert ratios[
        "kvtrace tracing=head-0.1 / kvtrace tracing=off reads@128 (server CPU per op)"
    ] == (round(80 / 70, 3))
    assert len(ratios) == 8


def test_comparison_table_has_a_row_per_system_and_client_count() -> None:
    text = kv.comparison_table(RESULTS, [32, 128])
    lines = text.splitlines()
    assert lines[0].startswith("| system | clients | writes/s | reads/s |")
    assert "| load generator CPU µs per write / read |" in lines[0]
    assert len(lines) == 2 + 4 * 2
    assert (
        "| etcd (gRPC, Go client) | 32 | 5,000 | 10,000 | 1.00 / 3.00 | 1.00 / 3.00 | 300 / 140 "
        "| 30 / 14 | 0.80 / 0.20 |" in lines
    )
    # the unloaded p50s once per system, on its first row
    assert (
        "| etcd (gRPC, Go client) | 128 | 10,000 | 20,000 | 1.00 / 3.00 | 1.00 / 3.00 | 150 / 70 "
        "| 15 / 7 |  |" in lines
    )
    # a system missing a phase (or the generator's CPU) shows "-" rather than failing
    partial = kv.comparison_table({"etcd (JSON gateway)": {"writes": result(10, 5)}}, [32])
    assert (
        "| etcd (JSON gateway) | 32 | 10 | - | 1.00 / 3.00 | - / - | 5 / - | 0 / - | - / - |"
        in partial
    )


def test_targets_are_judged_on_the_go_generators_untraced_cluster_at_32_clients() -> None:
    judged = kv.judge_targets(GO_RESULTS, [32, 128], "kvtrace tracing=off")
    assert judged["judged_on"] == "kvtrace tracing=off (Go client)"
    targets = judged["targets"]
    # 12,000 writes/s at 150 µs each; 30,000 reads/s; unloaded p50 0.8 ms
    assert targets["QUORUM writes/s"] == {"target": ">= 12000", "value": 12000, "met": True}
    assert targets["server CPU µs per write"] == {"target": "<= 140", "value": 150.0, "met": False}
    assert targets["QUORUM reads/s"]["met"] is True
    assert targets["unloaded write p50 ms"] == {"target": "<= 0.6", "value": 0.8, "met": False}
    # without the Go generator, the Python generator's figures; without 32 clients, nothing
    python = kv.judge_targets(RESULTS, [32, 128], "kvtrace tracing=off")
    assert python["judged_on"] == "kvtrace tracing=off"
    assert python["targets"]["QUORUM writes/s"]["value"] == 8000
    assert kv.judge_targets(GO_RESULTS, [128], "kvtrace tracing=off") == {}
    assert kv.judge_targets({}, [32], "kvtrace tracing=off") == {}
