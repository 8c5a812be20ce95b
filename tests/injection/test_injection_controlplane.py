"""The injection webhook on the real API server: the operator serves kopf's admission
hook on loopback with a certificate of its own CA and registers its MutatingWebhookConfiguration;
an annotated Deployment's pods are injected (its own token Secret, owned by the Deployment and
in the token set; the CA copy; status.instrumentedWorkloads), an unannotated one's are not;
a missing pipeline or a misspelled annotation leaves the pod created, marked, with an event on
its workload; with the operator stopped pods are still created (failurePolicy Ignore); a
pipeline change rolls only the restart-on-change workload."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvtrace.devstack.operator_fixtures import Operator
from kvtrace.devstack.pytest_plugin import dump_log_if_failed
from kvtrace_operator.render import webhook as webhook_render

pytestmark = pytest.mark.controlplane

TIMEOUT = 90.0
PIPELINE = {
    "apiVersion": "kvtrace.dev/v1alpha1",
    "kind": "TracingPipeline",
    "metadata": {"name": "traces"},
    "spec": {"sampling": {"mode": "head", "ratio": 1}},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def injecting(
    local_cluster: Any,
    namespace: str,
    crds: list[str],
    tmp_path: Path,
    endpoint_map: Any,
    kube_ns: Any,
    poll: Any,
    request: pytest.FixtureRequest,
) -> Iterator[Operator]:
    """The operator with the webhook on a free loopback port, registered and listening."""
    port = free_port()
    op = Operator(
        local_cluster,
        namespace,
        tmp_path / "operator.log",
        ["--webhook-port", str(port), "--canary-interval", "0"],
        endpoint_map.path,
    ).start()
    op.port = port  # type: ignore[attr-defined]
    try:
        name = webhook_render.configuration_name([namespace])
        poll(
            lambda: (
                port_open(port)
                and kube_ns.run("get", "mutatingwebhookconfiguration", name, check=False).returncode
                == 0
            ),
            timeout=TIMEOUT,
            message="webhook registered and listening",
        )
        yield op
    finally:
        op.stop()
        dump_log_if_failed(request, "operator log", op.log_path)
        kube_ns.kubectl(
            "delete",
            "mutatingwebhookconfiguration",
            webhook_render.configuration_name([namespace]),
            "--ignore-not-found",
            check=False,
        )


def deployment(
    name: str, annotations: dict[str, str] | None = None, replicas: int = 1
) -> dict[str, Any]:
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "shop:1",
                    "command": ["sleep", "3600"],
                    "env": [{"name": "OWN", "value": "1"}],
                }
            ]
        },
    }
    if annotations:
        template["metadata"]["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template,
        },
    }


def pods_of(kube: Any, app: str) -> list[dict[str, Any]]:
    return [
        p for p in kube.list("pods", f"app={app}") if not p["metadata"].get("deletionTimestamp")
    ]


def env_names(pod: dict[str, Any]) -> list[str]:
    return [e["name"] for e in pod["spec"]["containers"][0].get("env") or []]


def events_for(kube: Any, name: str, reason: str) -> list[str]:
    return [
        e["message"]
        for e in kube.list("events")
        if e["involvedObject"]["name"] == name and e["reason"] == reason
    ]


def test_webhook_injects_annotated_pods_only(
    injecting: Operator, kube_ns: Any, poll: Any, namespace: str
) -> None:
    kube_ns.apply(PIPELINE)
    poll(
        lambda: kube_ns.get("secret", "traces-tls-trust") is not None,
        timeout=TIMEOUT,
        message="trust bundle",
    )
    kube_ns.apply(
        deployment("web", {"kvtrace.dev/inject": "traces", "kvtrace.dev/inject-python": "true"}),
        deployment("plain"),
        deployment("lost", {"kvtrace.dev/inject": "nowhere"}),
        deployment("typo", {"kvtrace.dev/injct": "traces"}),
    )
    for app in ("web", "plain", "lost", "typo"):
        poll(lambda a=app: pods_of(kube_ns, a), timeout=TIMEOUT, message=f"a pod of {app}")

    (web,) = pods_of(kube_ns, "web")
    annotations = web["metadata"]["annotations"]
    assert annotations["kvtrace.dev/injected"] == f"{namespace}/traces"
    env = {e["name"]: e for e in web["spec"]["containers"][0]["env"]}
    assert env["OTEL_SERVICE_NAME"]["value"] == "web" and env["OWN"]["value"] == "1"
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert (
        env["KVTRACE_OTLP_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
        == "web-deployment-otlp-workload"
    )
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("https://traces-collector.")
    assert [c["name"] for c in web["spec"]["initContainers"]] == ["kvtrace-python-agent"]
    secret = kube_ns.get("secret", "web-deployment-otlp-workload")
    assert [(r["kind"], r["name"]) for r in secret["metadata"]["ownerReferences"]] == [
        ("Deployment", "web")
    ]
    trust = kube_ns.get("secret", "traces-tls-trust")["data"]["ca.crt"]
    assert (
        secret["data"]["ca.crt"] == trust and len(base64.b64decode(secret["data"]["token"])) == 43
    )

    (plain,) = pods_of(kube_ns, "plain")
    assert env_names(plain) == ["OWN"] and "initContainers" not in plain["spec"]
    assert not any(k.startswith("kvtrace.dev/") for k in plain["metadata"].get("annotations") or {})

    for app, says in (
        ("lost", f"TracingPipeline {namespace}/nowhere not found"),
        ("typo", "did you mean kvtrace.dev/inject?"),
    ):
        (pod,) = pods_of(kube_ns, app)
        assert env_names(pod) == ["OWN"], app  # created, not injected
        assert says in pod["metadata"]["annotations"]["kvtrace.dev/injection-error"]
        poll(
            lambda a=app, s=says: any(s in m for m in events_for(kube_ns, a, "InjectionFailed")),
            timeout=TIMEOUT,
            message=f"InjectionFailed event on Deployment {app}",
        )

    workload = f"{namespace}/Deployment/web"
    poll(
        lambda: (
            (kube_ns.get("tracingpipeline", "traces").get("status") or {}).get(
                "instrumentedWorkloads"
            )
            == [workload]
        ),
        timeout=TIMEOUT,
        message="status.instrumentedWorkloads",
    )
    poll(
        lambda: (
            f"workload/{workload}"
            in (kube_ns.condition("tracingpipeline", "traces", "TokensReady") or {}).get(
                "message", ""
            )
        ),
        timeout=TIMEOUT,
        message="the workload's token in the token set",
    )


def test_pods_are_created_with_the_operator_stopped(
    injecting: Operator, kube_ns: Any, poll: Any
) -> None:
    kube_ns.apply(PIPELINE)
    poll(
        lambda: kube_ns.get("secret", "traces-tls-trust") is not None,
        timeout=TIMEOUT,
        message="trust bundle",
    )
    injecting.stop()
    assert not port_open(injecting.port)  # type: ignore[attr-defined]
    kube_ns.apply(deployment("late", {"kvtrace.dev/inject": "traces"}))
    poll(
        lambda: pods_of(kube_ns, "late"),
        timeout=TIMEOUT,
        message="the pod created without the webhook",
    )
    (pod,) = pods_of(kube_ns, "late")
    assert env_names(pod) == ["OWN"]
    assert "kvtrace.dev/injected" not in (pod["metadata"].get("annotations") or {})


def test_pipeline_change_rolls_restart_on_change_workloads_only(
    injecting: Operator, kube_ns: Any, poll: Any
) -> None:
    kube_ns.apply(PIPELINE)
    poll(
        lambda: kube_ns.get("secret", "traces-tls-trust") is not None,
        timeout=TIMEOUT,
        message="trust bundle",
    )
    kube_ns.apply(
        deployment(
            "rolling", {"kvtrace.dev/inject": "traces", "kvtrace.dev/restart-on-change": "true"}
        ),
        deployment("steady", {"kvtrace.dev/inject": "traces"}),
    )
    for app in ("rolling", "steady"):
        poll(
            lambda a=app: [
                p
                for p in pods_of(kube_ns, a)
                if "kvtrace.dev/injected" in (p["metadata"].get("annotations") or {})
            ],
            timeout=TIMEOUT,
            message=f"an injected pod of {app}",
        )

    def template(name: str) -> dict[str, str]:
        return (
            kube_ns.get("deployment", name)["spec"]["template"]["metadata"].get("annotations") or {}
        )

    # stamped by the workload webhook at creation: no rollout of its own
    stamped = template("rolling")["kvtrace.dev/instrumentation-checksum"]
    assert kube_ns.get("deployment", "rolling")["metadata"]["generation"] == 1
    assert "kvtrace.dev/instrumentation-checksum" not in template("steady")
    (old,) = pods_of(kube_ns, "rolling")
    assert old["metadata"]["annotations"]["kvtrace.dev/injected-checksum"] == stamped

    kube_ns.run(
        "patch",
        "tracingpipeline",
        "traces",
        "--type=merge",
        "-p",
        '{"spec": {"sampling": {"mode": "head", "ratio": 0.5}}}',
    )
    poll(
        lambda: template("rolling").get("kvtrace.dev/instrumentation-checksum") != stamped,
        timeout=TIMEOUT,
        message="the restart-on-change workload rolled",
    )
    poll(
        lambda: events_for(kube_ns, "rolling", "InstrumentationChanged"),
        timeout=TIMEOUT,
        message="InstrumentationChanged event",
    )
    new = template("rolling")["kvtrace.dev/instrumentation-checksum"]
    poll(
        lambda: [
            p
            for p in pods_of(kube_ns, "rolling")
            if p["metadata"]["annotations"].get("kvtrace.dev/injected-checksum") == new
        ],
        timeout=TIMEOUT,
        message="a pod injected with the new configuration",
    )
    (pod,) = [
        p
        for p in pods_of(kube_ns, "rolling")
        if p["metadata"]["annotations"].get("kvtrace.dev/injected-checksum") == new
    ]
    assert {"name": "OTEL_TRACES_SAMPLER_ARG", "value": "0.5"} in pod["spec"]["containers"][0][
        "env"
    ]
    assert kube_ns.get("deployment", "steady")["metadata"]["generation"] == 1
    assert "kvtrace.dev/instrumentation-checksum" not in template("steady")
