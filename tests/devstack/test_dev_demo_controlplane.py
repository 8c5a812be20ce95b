"""`make dev` (`kvtrace dev demo`) for real: its own local cluster, the operator, the operator's
collector and Jaeger pods and the KV StatefulSet's pods run by the pod runner, load, traces
read back from Jaeger and drawn. Each test starts the command as a subprocess with its own
cluster (so it needs no session cluster and no ``namespace`` fixture) and a namespace of its
own, and checks that everything it started is gone afterwards."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kvtrace.devstack import tools
from kvtrace.devstack.cluster import BINARIES, kubectl_path
from kvtrace.devstack.proc import processes_mentioning
from kvtrace.devstack.pytest_plugin import require_binaries

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
LOAD = ["--ops", "300", "--duration", "10", "--clients", "4"]


def demo_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KVTRACE_KEEP_WORKDIRS",)}
    env.update(KVTRACE_DEV_STATE=str(state), PYTHONUNBUFFERED="1")
    return env


def make_dev_command(dev_args: list[str]) -> list[str]:
    """What `make dev DEV_ARGS=...` runs once its prerequisites are met (`make -n` prints the
    recipes without running them; the last one is the target's own)."""
    shown = subprocess.run(
        ["make", "-n", "-s", "dev", f"DEV_ARGS={shlex.join(dev_args)}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    command = shlex.split(shown.strip().splitlines()[-1])
    assert Path(command[0]).name == "kvtrace" and command[1:3] == ["dev", "demo"], shown
    return [str(Path(sys.executable).parent / "kvtrace"), *command[1:]]  # this test session's venv


def workdir_of(output: str) -> Path:
    match = re.search(r"^kubeconfig: (\S+)/kubeconfig$", output, re.M)
    assert match, output
    return Path(match.group(1))


def pids_of(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"\bpid (\d+)", output)]


def assert_all_stopped(output: str, state: Path) -> None:
    workdir = workdir_of(output)
    assert not workdir.exists() and processes_mentioning(str(workdir)) == []
    alive = [
        pid
        for pid in pids_of(output)
        if Path(f"/proc/{pid}").exists()
        and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    ]
    assert alive == [], f"still running: {alive}"
    assert not state.exists()
    assert "stopping: KV processes, tracing backends, operator, cluster..." in output


def test_make_dev_exit_runs_every_step_draws_a_trace_and_cleans_up(tmp_path: Path) -> None:
    require_binaries(*BINARIES, "otelcol-kvtrace", "jaeger")
    namespace = f"demo-{secrets.token_hex(2)}"
    state = tmp_path / "state.json"
    argv = make_dev_command(["--exit", "--namespace", namespace, *LOAD])
    proc = subprocess.run(
        argv, cwd=REPO, env=demo_env(state), capture_output=True, text=True, timeout=240
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output

    steps = re.findall(r"^    (.+): ok \((\d+\.\d)s\)$", output, re.M)
    assert [name for name, _ in steps] == [
        "example",
        "local stack",
        "cluster",
        "CRDs",
        "namespace",
        "operator",
        "example Ready",
        "metrics store",
        "tracing backends",
        "KV nodes",
        "load",
        "traces in Jaeger",
        "RED metrics",
    ], output
    assert "    example Ready: kvcluster/basic, tracingpipeline/dev-traces" in output, output
    assert "3 KV processes started (basic-0, basic-1, basic-2)" in output, output
    # The KV processes got the operator's rendered OTel environment, the collector made local:
    # https (TLS is on by default), trusting the pipeline's bundle.
    collector = re.search(r"^  collector \(OTLP/HTTP\): (https://127\.[\d.]+:4318)$", output, re.M)
    assert collector, output
    assert f"      OTEL_EXPORTER_OTLP_ENDPOINT={collector.group(1)}" in output
    assert re.search(
        r"^      OTEL_EXPORTER_OTLP_CERTIFICATE=/\S+/telemetry-ca/ca\.crt$", output, re.M
    ), output
    assert "      OTEL_SERVICE_NAME=basic" in output, output
    assert f"k8s.namespace.name={namespace},k8s.pod.name=basic-0" in output, output

    load = re.search(
        r"^load: (\d+) ops in [\d.]+s, ([\d.]+) ops/s, p50 [\d.]+ms, p99 [\d.]+ms, (\d+) errors",
        output,
        re.M,
    )
    assert load, output
    assert int(load.group(1)) == 300 and float(load.group(2)) > 0 and load.group(3) == "0", output
    traces = re.search(
        r"^traces in Jaeger: (\d+) for 300 operations sent, \d+ spans, (\d+) with spans from "
        r"more than one node, (\d+) with errors$",
        output,
        re.M,
    )
    assert traces, output
    # Development sampling keeps every operation's trace (anti-entropy adds a few of its own).
    assert int(traces.group(1)) >= 300 and int(traces.group(2)) > 0 and traces.group(3) == "0", (
        output
    )
    assert "  services: basic; nodes: basic-0, basic-1, basic-2" in output, output

    jaeger = re.search(r"^  export KVTRACE_JAEGER_URL=(https://127\.[\d.]+:16686)$", output, re.M)
    assert jaeger and f"  Jaeger UI and /api/v3: {jaeger.group(1)}" in output, output
    # spec.metrics (on by default): the pipeline's Prometheus, the Monitor tab, a RED table of
    # the load from the span metrics (every span, before sampling).
    prometheus = re.search(
        r"^  export KVTRACE_PROMETHEUS_URL=(http://127\.[\d.]+:9090)$", output, re.M
    )
    assert prometheus and f"  Prometheus: {prometheus.group(1)}" in output, output
    assert f"  Jaeger Monitor tab (RED per operation): {jaeger.group(1)}/monitor" in output, output
    red = output.split("KV operations (spanmetrics, every span before sampling; rates over ", 1)
    assert len(red) == 2, output
    rows = re.findall(
        r"^(read|write|delete)\s+quorum\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
        red[1],
        re.M,
    )  # ops/s, errors, p50, p95, p99: the percentiles too, even for a burst within one flush
    assert {row[0] for row in rows} >= {"read", "write"}, red[1]
    assert all(float(row[1]) > 0 and float(row[2]) == 0 for row in rows), red[1]
    assert all(0 < float(row[3]) <= float(row[4]) <= float(row[5]) for row in rows), red[1]
    assert (
        "Prometheus scrapes kvtrace-collector (1), kvtrace-jaeger (1), kvtrace-kvnode (3)" in output
    )
    drawn = output.split("One trace, with spans from ", 1)[1]
    header, rows = drawn.splitlines()[1], drawn.splitlines()[3:]
    assert re.match(r"^trace [0-9a-f]{32}  basic: (PUT|GET|DELETE) /v1/kv/\{key\}", header), drawn
    nodes = {
        match.group(1)
        for row in rows
        if (match := re.search(r"\s(basic-\d)\s+[\d.]+(?:us|ms|s)\s", row))
    }
    assert len(nodes) > 1, drawn
    assert any("└─ kvstore.replicate" in row for row in rows), drawn
    assert_all_stopped(output, state)


def test_dev_demo_of_the_production_example_stays_up_until_sigterm_then_stops_everything(
    tmp_path: Path, poll: Any
) -> None:
    """examples/02-production-sampling: its members' service name (``serviceName: orders-kv``)
    comes from their rendered environment, and the collector's tail sampling keeps about a
    tenth of the traces. The demo stays up, usable through `kvtrace dev env`, until SIGTERM."""
    require_binaries(*BINARIES, "otelcol-kvtrace", "jaeger")
    namespace = f"demo-{secrets.token_hex(2)}"
    state = tmp_path / "state.json"
    log = tmp_path / "demo.log"
    env = demo_env(state)
    kvtrace = str(Path(sys.executable).parent / "kvtrace")
    argv = [
        kvtrace,
        "dev",
        "demo",
        "--example",
        str(REPO / "examples" / "02-production-sampling"),
        "--namespace",
        namespace,
        *LOAD,
    ]
    with log.open("w") as out:
        demo = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        poll(
            lambda: "Up until Ctrl-C" in log.read_text() or demo.poll() is not None,
            timeout=180,
            interval=1,
            message="the demo finished its steps",
        )
        output = log.read_text()
        assert demo.poll() is None, output
        assert (
            "      OTEL_SERVICE_NAME=orders-kv" in output
            and "3 KV processes started (orders-0, orders-1, orders-2)" in output
        ), output
        kept = re.search(r"^traces in Jaeger: (\d+) for 300 operations sent", output, re.M)
        assert kept and 0 < int(kept.group(1)) < 300, output  # ratio 0.1 (+ slow and error traces)
        exports = subprocess.run(
            [kvtrace, "dev", "env"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        found = dict(re.findall(r"^export (\w+)=(\S+)$", exports, flags=re.M))
        # TLS (the default): the pipeline's CA bundle for the collector and Jaeger's query port;
        # the KV cluster's own bundle and client token (its TLS and tokens are on by default).
        assert set(found) == {
            "KUBECONFIG",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "KVTRACE_JAEGER_URL",
            "KVTRACE_ENDPOINT_MAP",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "KVTRACE_JAEGER_CA_FILE",
            "KVTRACE_KV_CA_FILE",
            "KVTRACE_KV_TOKEN_FILE",
            "KVTRACE_PROMETHEUS_URL",
        }
        member = re.search(r"--endpoint (https://127\.[\d.]+:7070)", output)
        assert member, output
        kv = [kvtrace, "kv", "put", "--endpoint", member.group(1), "demo/exported", "v"]
        put = subprocess.run(kv, env={**env, **found}, capture_output=True, text=True, timeout=60)
        assert put.returncode == 0, put.stdout + put.stderr
        no_token = {k: v for k, v in {**env, **found}.items() if k != "KVTRACE_KV_TOKEN_FILE"}
        refused = subprocess.run(kv, env=no_token, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "unauthorized" in refused.stderr, (
            refused.stdout + refused.stderr
        )
        assert found["KVTRACE_JAEGER_URL"].startswith("https://")
        verified = ssl.create_default_context(cafile=found["KVTRACE_JAEGER_CA_FILE"])
        with urllib.request.urlopen(
            found["KVTRACE_JAEGER_URL"] + "/api/v3/services", timeout=10, context=verified
        ) as resp:
            assert "orders-kv" in resp.read().decode()
        # `kvtrace traces` and kubectl work with nothing but the printed exports.
        listed = subprocess.run(
            [kvtrace, "traces", "--service", "orders-kv", "--limit", "2", "--summary"],
            env={**env, **found},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert len(re.findall(r"^trace [0-9a-f]{32}  orders-kv: ", listed.stdout, re.M)) == 2, (
            listed.stdout
        )
        # `kvtrace top` reads the pipeline's Prometheus with nothing but the printed exports.
        top = subprocess.run(
            [kvtrace, "top", "-n", namespace, "-o", "json"],
            env={**env, **found},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert top.returncode == 0, top.stdout + top.stderr
        assert "write" in {row["kvstore_operation"] for row in json.loads(top.stdout)["operations"]}
        pods = subprocess.run(
            [kubectl_path(), "-n", namespace, "get", "pods", "-o", "name"],
            env={**env, **found},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert {"pod/orders-0", "pod/orders-1", "pod/orders-2"} <= set(pods.split())
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=90)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
    output = log.read_text()
    assert demo.returncode == 0, output
    assert re.fullmatch(r"stopped in [\d.]+s", output.rstrip().splitlines()[-1]), output
    assert_all_stopped(output, state)


def test_dev_demo_exit_names_the_failed_step_and_stops_what_it_started(tmp_path: Path) -> None:
    """Without the TracingPipeline CRD the example cannot be applied: the demo says which step
    failed and why, exits 1 and leaves nothing running."""
    require_binaries(*BINARIES, "otelcol-kvtrace", "jaeger")
    crds = tmp_path / "crds"
    crds.mkdir()
    (crds / "kvclusters.yaml").write_text(
        (REPO / "crds" / "kvtrace.dev_kvclusters.yaml").read_text()
    )
    state = tmp_path / "state.json"
    argv = [
        str(Path(sys.executable).parent / "kvtrace"),
        "dev",
        "demo",
        "--exit",
        "--crds",
        str(crds),
        "--namespace",
        f"demo-{secrets.token_hex(2)}",
    ]
    proc = subprocess.run(
        argv, cwd=REPO, env=demo_env(state), capture_output=True, text=True, timeout=180
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    # kubectl names the kind ("no matches for kind TracingPipeline") or, when its discovery
    # cache still lists the resource, the resource it posted to (tracingpipelines.kvtrace.dev).
    assert re.search(
        r"^    example Ready: FAILED after [\d.]+s: `kubectl -n \S+ apply -f \S+01-basic` failed: "
        r".*(TracingPipeline|tracingpipelines\.kvtrace\.dev)",
        output,
        re.M,
    ), output
    assert "kvtrace dev demo: step 'example Ready' failed: `kubectl" in output
    assert "Stopping everything that was started." in output and "] tracing backends" not in output
    assert_all_stopped(output, state)


def test_dev_demo_of_the_instrumented_app_draws_one_trace_from_the_app_through_the_store(
    tmp_path: Path,
) -> None:
    """examples/06-instrumented-app: the operator serves the injection webhook on
    loopback; the application's pods are injected (token, CA, the Python agent by init
    container) and run by the pod runner from their mutated spec with no change to the app's
    code; one trace in the real Jaeger starts with the app's urllib CLIENT span and holds the
    coordinator's SERVER span and the replicas' spans."""
    require_binaries(*BINARIES, "otelcol-kvtrace", "jaeger")
    assert not [
        tool for tool in ("python-agent", "java-agent") if tools.verify(tools.TOOLS[tool])
    ], "the agents are not built: kvtrace dev tools python-agent java-agent"
    namespace = f"demo-{secrets.token_hex(2)}"
    state = tmp_path / "state.json"
    argv = [
        str(Path(sys.executable).parent / "kvtrace"),
        "dev",
        "demo",
        "--exit",
        "--example",
        str(REPO / "examples" / "06-instrumented-app"),
        "--namespace",
        namespace,
        *LOAD,
    ]
    proc = subprocess.run(
        argv, cwd=REPO, env=demo_env(state), capture_output=True, text=True, timeout=540
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    steps = re.findall(r"^    (.+): ok \((\d+\.\d)s\)$", output, re.M)
    names = [name for name, _ in steps]
    assert names[names.index("KV nodes") + 1] == "application", output
    assert "    injection webhook https://127.0.0.1:" in output, output
    assert re.search(
        rf"^    kvapp-\S+: injected by {namespace}/app-traces, OTEL_SERVICE_NAME=kvapp, "
        r"PYTHONPATH=/\S+/opentelemetry/instrumentation/auto_instrumentation:",
        output,
        re.M,
    ), output
    assert re.search(
        rf"^    kvapp-java-\S+: injected by {namespace}/app-traces, OTEL_SERVICE_NAME=kvapp-java, "
        r"JAVA_TOOL_OPTIONS=-javaagent:/\S+/javaagent.jar",
        output,
        re.M,
    ), output
    # both applications' requests are one trace with the store's spans (the Java agent too)
    for service in ("kvapp", "kvapp-java"):
        assert re.search(
            rf"^    application {service}: trace [0-9a-f]{{32}}, \d+ spans, services "
            rf"{'kvapp, store' if service == 'kvapp' else 'kvapp-java, store'}$",
            output,
            re.M,
        ), output
    drawn = output.split(
        "One trace, from the application 'kvapp' through the store, with spans from ", 1
    )[1]
    header, rows = drawn.splitlines()[1], drawn.splitlines()[3:]
    assert re.match(r"^trace [0-9a-f]{32}  kvapp: (PUT|GET)\b", header), drawn
    assert re.search(r"\bkvapp\s+kvapp-", rows[0]), (
        drawn
    )  # the root: the app's own span, on its pod
    assert any(re.search(r"(PUT|GET) /v1/kv/\{key\}\s+store\s+store-\d", row) for row in rows), (
        drawn
    )
    assert len({m.group(1) for row in rows if (m := re.search(r"\s(store-\d)\s", row))}) >= 2, drawn
    assert_all_stopped(output, state)
