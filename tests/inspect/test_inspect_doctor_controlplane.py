"""`kvtrace doctor` on the local cluster: healthy, then each check made to fail by breaking
exactly what it checks. The operator builds everything, then stops (it would repair the
breakage); the pod runner runs the real collector and Jaeger behind their pods, reached
through the development endpoint map."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from kvtrace.devstack import tools

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0
PROGRAMS = {"otelcol": "otelcol-kvtrace", "jaeger": "jaeger"}


def resources(decision_wait: str = "1s", **collector: Any) -> list[dict[str, Any]]:
    tp = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces"},
        "spec": {
            "sampling": {"decisionWait": decision_wait, "latencyThreshold": "200ms"},
            "collector": {"resources": {"limits": {"memory": "2Gi"}}, **collector},
        },
    }
    kv = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv"},
        "spec": {"replicas": 3, "tracing": {"pipelineRef": {"name": "traces"}}},
    }
    return [tp, kv]


def statuses(output: str) -> dict[str, str]:
    """``{check name: PASS|FAIL|WARN|SKIP}`` from doctor's output."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^\[(\w+)\] ([^:]+):", output, re.M)}


def deploy(kube_ns: Any, poll: Any) -> None:
    kube_ns.apply(*resources())
    for kind, name in (("tracingpipeline", "traces"), ("kvcluster", "kv")):
        poll(
            lambda k=kind, n=name: kube_ns.condition_is(k, n, "Ready", "True"),
            timeout=TIMEOUT,
            message=f"{kind}/{name} Ready",
        )


def run_backends(pod_runner: Any, endpoint_map: Any, poll: Any) -> None:
    """Jaeger first: the collector's config names Jaeger's OTLP Service, which the runner
    rewrites to Jaeger's address only once Jaeger is in the endpoint map."""

    def command(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        return [str(tools.binary(PROGRAMS[container["name"]]))]

    pod_runner("app.kubernetes.io/component=jaeger", resolve_command=command)
    poll(
        lambda: any(key.startswith("traces-jaeger-otlp.") for key in endpoint_map.entries()),
        timeout=TIMEOUT,
        message="Jaeger in the endpoint map",
    )
    pod_runner("app.kubernetes.io/component=collector", resolve_command=command)


def test_doctor_passes_then_flags_a_stopped_jaeger(
    operator: Any,
    kube_ns: Any,
    kvtrace_cli: Any,
    poll: Any,
    pod_runner: Any,
    endpoint_map: Any,
    tmp_path: Any,
) -> None:
    deploy(kube_ns, poll)
    run_backends(pod_runner, endpoint_map, poll)
    env = {"KVTRACE_ENDPOINT_MAP": str(endpoint_map.path)}
    ns = kube_ns.namespace

    def doctor(*extra: str) -> Any:
        return kvtrace_cli("doctor", "-n", ns, "kv", "--canary-timeout", "15s", *extra, env=env)

    last: list[str] = []

    def healthy() -> Any:
        result = doctor()
        last[:] = [result.stdout + result.stderr]
        return result if result.returncode == 0 else None

    try:
        result = poll(
            healthy,
            timeout=TIMEOUT,
            interval=2,
            message="doctor passes once collector and Jaeger run",
        )
    except AssertionError:
        runner_logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}"
            for p in [
                *tmp_path.glob("pods-*/logs/*"),
                *tmp_path.glob("pods-*/**/config.yaml"),
                endpoint_map.path,
            ]
        )
        raise AssertionError(
            f"doctor never passed; last output:\n{last[0]}\n{runner_logs}"
        ) from None
    assert statuses(result.stdout) == {
        "tracing pipeline": "PASS",
        "collector endpoints": "PASS",
        "collector accepts OTLP": "PASS",
        "members' OTel environment": "PASS",
        "sampling coherent": "PASS",
        "batch and memory limiter": "PASS",
        "canary trace reaches Jaeger": "PASS",
        # env, system and k8snode (k8s_api against the local API server) on the canary
        "resource detection": "PASS",
        # no pod of the namespace asks for kvtrace.dev/inject: nothing to verify
        "injection": "SKIP",
    }, result.stdout
    assert "0 failed" in result.stdout
    jaeger_url = next(
        url
        for key, url in json.loads(endpoint_map.path.read_text()).items()
        if key.startswith("traces-jaeger-query.") and key.endswith(".svc:16686")
    )

    # Stop Jaeger: the canary is accepted by the collector but never found.
    operator.stop()
    kube_ns.run("scale", "deployment/traces-jaeger", "--replicas=0")
    poll(
        lambda: (
            not any(
                k.startswith("traces-jaeger") for k in json.loads(endpoint_map.path.read_text())
            )
        ),
        timeout=TIMEOUT,
        message="Jaeger stopped",
    )
    # The local pod runner restarts the collector when a Service its config names loses its
    # last backend (a kubelet would not): wait until it accepts OTLP again, so that what the
    # doctor reports is the stopped Jaeger and nothing else.
    for extra in ((), ("--jaeger", f"http://{jaeger_url}")):
        result = poll(
            lambda extra=extra: (
                r
                if statuses((r := doctor(*extra)).stdout).get("collector accepts OTLP") == "PASS"
                else None
            ),
            timeout=TIMEOUT,
            interval=2,
            message="the collector accepts OTLP with Jaeger stopped",
        )
        found = statuses(result.stdout)
        assert result.returncode == 1, result.stdout + result.stderr
        assert found["canary trace reaches Jaeger"] == "FAIL", result.stdout
        assert found["collector accepts OTLP"] == "PASS" and found["collector endpoints"] == "PASS"
        assert "Deployment traces-jaeger: no ready replica" in result.stdout


def test_doctor_flags_each_broken_thing(
    operator: Any, kube_ns: Any, kvtrace_cli: Any, poll: Any
) -> None:
    deploy(kube_ns, poll)
    operator.stop()  # it would repair what we break
    ns = kube_ns.namespace

    def doctor() -> Any:
        result = kvtrace_cli("doctor", "-n", ns, "kv", "--no-canary")
        assert "Traceback" not in result.stderr, result.stderr
        return result

    result = doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    assert statuses(result.stdout)["members' OTel environment"] == "PASS"
    assert (
        statuses(result.stdout)["collector accepts OTLP"] == "SKIP"
    )  # no endpoint map: cluster DNS only

    # 1. A member without the pipeline's environment.
    sts = kube_ns.get("statefulset", "kv")
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    index = next(i for i, e in enumerate(env) if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT")
    patch = [
        {"op": "replace", "path": "/spec/updateStrategy", "value": {"type": "OnDelete"}},
        {"op": "remove", "path": f"/spec/template/spec/containers/0/env/{index}"},
    ]
    kube_ns.run("patch", "statefulset", "kv", "--type=json", "-p", json.dumps(patch))
    kube_ns.run("delete", "pod", "kv-1", "--wait=false")

    def kv1_recreated_without_env() -> bool:
        pod = kube_ns.get("pod", "kv-1") or {}
        names = {e["name"] for e in pod.get("spec", {}).get("containers", [{}])[0].get("env", [])}
        return (
            bool(pod)
            and not pod["metadata"].get("deletionTimestamp")
            and "OTEL_EXPORTER_OTLP_ENDPOINT" not in names
        )

    poll(
        kv1_recreated_without_env,
        timeout=TIMEOUT,
        message="kv-1 recreated from the stripped template",
    )
    result = doctor()
    assert result.returncode == 1
    assert statuses(result.stdout)["members' OTel environment"] == "FAIL"
    assert "1 of 3 member pods lack the pipeline's OTel environment: kv-1" in result.stdout
    assert "kv-1: missing OTEL_EXPORTER_OTLP_ENDPOINT" in result.stdout
    assert statuses(result.stdout)["sampling coherent"] == "PASS"

    # 2. A head-sampled production configuration by hand: no tail sampling in the collector.
    config = kube_ns.get("configmap", "traces-collector")["data"]["config.yaml"]
    head = re.sub(r"^ *- tail_sampling\n", "", config, flags=re.M)
    assert head != config
    kube_ns.run(
        "patch",
        "configmap",
        "traces-collector",
        "--type=merge",
        "-p",
        json.dumps({"data": {"config.yaml": head}}),
    )
    result = doctor()
    found = statuses(result.stdout)
    assert (
        found["sampling coherent"] == "FAIL"
        and "production mode but no collector config tail-samples" in result.stdout
    )
    assert found["batch and memory limiter"] == "PASS"

    # 3. A collector too small for its batches.
    kube_ns.run("set", "resources", "deployment/traces-collector", "--limits=memory=16Mi")
    result = doctor()
    assert statuses(result.stdout)["batch and memory limiter"] == "FAIL"
    assert "larger than the memory limiter's spike allowance (4MiB of 16MiB)" in result.stdout

    # 4. The collector scaled to zero.
    assert statuses(result.stdout)["collector endpoints"] == "PASS"
    kube_ns.run("scale", "deployment/traces-collector", "--replicas=0")
    poll(
        lambda: statuses(doctor().stdout)["collector endpoints"] == "FAIL",
        timeout=TIMEOUT,
        message="collector endpoints FAIL once scaled to zero",
    )
    assert "kubectl scale deployment traces-collector --replicas=1" in doctor().stdout
    as_json = kvtrace_cli("doctor", "-n", ns, "kv", "--no-canary", "-o", "json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["failed"] is True
    assert {c["name"]: c["status"] for c in report["checks"]} == statuses(doctor().stdout)

    # Bad input: one line naming the parameter.
    missing = kvtrace_cli("doctor", "-n", ns, "nope")
    assert (
        missing.returncode == 2
        and missing.stderr.strip()
        == f"kvtrace doctor: error: NAME: no KVCluster named 'nope' in namespace {ns}"
    )
    bad = kvtrace_cli("doctor", "-n", ns, "kv", "--canary-timeout", "later")
    assert bad.returncode == 2 and "--canary-timeout: expected a duration" in bad.stderr
    bad = kvtrace_cli("doctor", "-n", ns, "kv", "--collector", "localhost:4318")
    assert bad.returncode == 2 and "--collector: expected an http(s) URL" in bad.stderr
