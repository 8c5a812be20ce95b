"""The local cluster itself: real API server, controllers, scheduler, KWOK nodes, volumes."""

from __future__ import annotations

import json
import ssl
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.devstack.cluster import LocalCluster
from kvtrace.devstack.proc import processes_mentioning

pytestmark = pytest.mark.controlplane


def _apply(kubectl: Any, *objects: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def _pods(kube: Any, namespace: str, app: str) -> list[Any]:
    from lightkube.resources.core_v1 import Pod

    return list(kube.list(Pod, namespace=namespace, labels={"app": app}))


def _running_ready(pods: list[Any], count: int) -> bool:
    ready = [
        p
        for p in pods
        if p.status
        and p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return len(ready) == count


def _deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "example/none:1"}]},
            },
        },
    }


def test_deployment_runs_on_kwok_nodes_and_is_garbage_collected(
    local_cluster: LocalCluster, kube: Any, kubectl: Any, namespace: str, poll: Any
) -> None:
    from lightkube.resources.apps_v1 import Deployment, ReplicaSet

    _apply(kubectl, _deployment(namespace, "web", 3))
    pods = poll(
        lambda: (lambda p: _running_ready(p, 3) and p)(_pods(kube, namespace, "web")),
        timeout=60,
        message="3 Running and Ready pods",
    )
    assert {p.spec.nodeName for p in pods} <= set(local_cluster.node_names())
    assert all(p.status.podIP for p in pods)

    kube.delete(Deployment, "web", namespace=namespace)  # background propagation: the GC's job
    poll(
        lambda: (
            not list(kube.list(ReplicaSet, namespace=namespace))
            and not _pods(kube, namespace, "web")
        ),
        timeout=60,
        message="ReplicaSet and pods garbage-collected",
    )


def _request_as(cluster: LocalCluster, path: str, user: str) -> int:
    context = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
    context.load_cert_chain(str(cluster.pki.admin_cert), str(cluster.pki.admin_key))
    request = urllib.request.Request(cluster.server + path, headers={"Impersonate-User": user})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_rbac_is_enforced_for_an_impersonated_service_account(
    local_cluster: LocalCluster, kubectl: Any, namespace: str, poll: Any
) -> None:
    user = f"system:serviceaccount:{namespace}:robot"
    path = f"/api/v1/namespaces/{namespace}/pods"
    assert _request_as(local_cluster, path, user) == 403
    denied = kubectl("get", "pods", "-n", namespace, f"--as={user}", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    _apply(
        kubectl,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "robot-reads-pods", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": namespace}],
        },
    )
    poll(
        lambda: _request_as(local_cluster, path, user) == 200,
        timeout=30,
        message="access after binding",
    )
    assert _request_as(local_cluster, f"/api/v1/namespaces/{namespace}/secrets", user) == 403


def test_statefulset_claims_bind_and_pods_run(
    kube: Any, kubectl: Any, namespace: str, poll: Any
) -> None:
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    _apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db", "namespace": namespace},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 7070}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": namespace},
            "spec": {
                "replicas": 3,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "db",
                                "image": "example/none:1",
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ]
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    )
    poll(
        lambda: _running_ready(_pods(kube, namespace, "db"), 3),
        timeout=90,
        message="3 StatefulSet pods",
    )
    claims = list(kube.list(PersistentVolumeClaim, namespace=namespace))
    assert sorted(c.metadata.name for c in claims) == ["data-db-0", "data-db-1", "data-db-2"]
    assert all(c.status.phase == "Bound" and c.spec.storageClassName == "standard" for c in claims)


def _http_server(body: str, setup: str = "pass", bind: str = 'os.environ["BIND"]') -> str:
    """Script of a tiny HTTP server on port 8080 whose GET answers ``body`` (an expression)."""
    return textwrap.dedent(f"""
        import http.server, json, os
        {setup}
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = ({body}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        http.server.ThreadingHTTPServer(({bind}, 8080), Handler).serve_forever()
    """)


_SERVER = _http_server(
    'json.dumps({"env": dict(os.environ), '
    '"greeting": open(os.path.join(os.environ["WWW"], "greeting.txt")).read()})'
)


def _get_json(address: str) -> Any:
    with urllib.request.urlopen(f"http://{address}/", timeout=5) as resp:
        return json.loads(resp.read())


def test_pod_runner_runs_pods_locally_and_follows_them(
    kube: Any, kubectl: Any, namespace: str, poll: Any, pod_runner: Any
) -> None:
    from lightkube.resources.core_v1 import Pod

    _apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "site", "namespace": namespace},
            "data": {"greeting.txt": "hello", "mode": "test"},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "volumes": [{"name": "www", "configMap": {"name": "site"}}],
                        "containers": [
                            {
                                "name": "web",
                                "image": "example/web:1",
                                "command": ["python3", "-c", _SERVER],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "env": [
                                    {"name": "WWW", "value": "/srv/www"},
                                    {"name": "BIND", "value": "0.0.0.0"},
                                    {
                                        "name": "POD_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                    },
                                    {
                                        "name": "POD_IP",
                                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                    },
                                    {
                                        "name": "MODE",
                                        "valueFrom": {
                                            "configMapKeyRef": {"name": "site", "key": "mode"}
                                        },
                                    },
                                    {"name": "URL", "value": "http://$(POD_NAME):8080"},
                                    {
                                        "name": "SERVICE",
                                        "value": f"http://web.{namespace}.svc:80/x",
                                    },
                                    {"name": "ELSEWHERE", "value": "other.example:80"},
                                ],
                                "volumeMounts": [{"name": "www", "mountPath": "/srv/www"}],
                            }
                        ],
                    },
                },
            },
        },
    )
    runner = pod_runner({"app": "web"})
    ((pod_name, address),) = runner.wait_running(1, timeout=60).items()

    service = runner.resolve(f"web.{namespace}.svc:80")
    assert service == f"{address}:8080"
    answer = _get_json(service)
    env = answer["env"]
    assert answer["greeting"] == "hello"
    assert env["POD_NAME"] == pod_name and env["POD_IP"] == address and env["BIND"] == address
    assert env["MODE"] == "test"
    # Cluster names the endpoint map knows are rewritten to the local addresses.
    assert env["URL"] == f"http://{address}:8080" and env["SERVICE"] == f"http://{address}:8080/x"
    assert env["ELSEWHERE"] == "other.example:80"
    assert env["KVTRACE_ENDPOINT_MAP"] == str(runner.endpoint_map_path)
    mapping = json.loads(runner.endpoint_map_path.read_text())
    assert mapping[f"web.{namespace}.svc.cluster.local:80"] == f"{address}:8080"

    old_pid = runner.processes(pod_name)["web"].pid
    kubectl(
        "patch",
        "configmap",
        "site",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"data":{"greeting.txt":"bye"}}',
    )
    poll(
        lambda: _get_json(service)["greeting"] == "bye",
        timeout=30,
        message="ConfigMap volume refreshed",
    )
    assert runner.processes(pod_name)["web"].pid == old_pid  # refreshed in place, not restarted

    kube.delete(Pod, pod_name, namespace=namespace)
    new_name = poll(
        lambda: next((n for n in runner.pods() if n != pod_name), None),
        timeout=60,
        message="replacement pod started locally",
    )
    assert runner.processes(new_name)["web"].pid != old_pid
    assert pod_name not in runner.pods()
    poll(
        lambda: _get_json(runner.resolve(f"web.{namespace}.svc:80"))["env"]["POD_NAME"] == new_name,
        timeout=30,
        message="service name follows the new pod",
    )


def test_a_stopped_cluster_leaves_no_process_or_directory_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KVTRACE_KEEP_WORKDIRS", raising=False)
    cluster = LocalCluster(nodes=1)
    cluster.start()
    workdir = cluster.workdir
    pids = [p.pid for p in cluster.components.values()]
    assert len(pids) == 5 and processes_mentioning(str(workdir))
    cluster.stop()
    assert processes_mentioning(str(workdir)) == []
    assert not workdir.exists()
    cluster.stop()  # idempotent


# Appends its pod name to DATA/boots at start and "stopped" on SIGTERM; GET answers the file.
_BOOTS = 'open(os.path.join(os.environ["DATA"], "boots"), "a")'
_WRITER = _http_server(
    'open(os.path.join(os.environ["DATA"], "boots")).read()',
    setup=f'{_BOOTS}.write(os.environ["POD_NAME"] + "\\n"); import signal, sys; '
    f'signal.signal(signal.SIGTERM, lambda *_: ({_BOOTS}.write("stopped\\n"), sys.exit(0)))',
    bind='"0.0.0.0"',
)


def _get_text(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/", timeout=5) as resp:
        return resp.read().decode()


def test_pod_runner_gives_statefulset_pods_stable_names_addresses_and_data(
    local_cluster: LocalCluster,
    kube: Any,
    kubectl: Any,
    namespace: str,
    poll: Any,
    endpoint_map: Any,
    tmp_path: Any,
) -> None:
    from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim, Pod

    from kvtrace.devstack.podrunner import PodRunner

    _apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kv", "namespace": namespace},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": "kv"},
                "ports": [{"name": "http", "port": 8080}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "kv", "namespace": namespace},
            "spec": {
                "replicas": 2,
                "serviceName": "kv",
                "selector": {"matchLabels": {"app": "kv"}},
                "template": {
                    "metadata": {"labels": {"app": "kv"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "kv",
                                "image": "example/kv:1",
                                "command": ["python3", "-c", _WRITER],
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "env": [
                                    {"name": "DATA", "value": "/var/lib/kv"},
                                    {
                                        "name": "POD_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                    },
                                ],
                                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/kv"}],
                            }
                        ]
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        },
    )
    with PodRunner(
        local_cluster, namespace, "app=kv", endpoint_map=endpoint_map, workdir=tmp_path / "pods"
    ) as runner:
        pods = runner.wait_running(2, timeout=90)
        entries = endpoint_map.entries()
        for name in ("kv-0", "kv-1"):
            assert entries[f"{name}.kv.{namespace}.svc.cluster.local:8080"] == f"{pods[name]}:8080"
            assert entries[f"{name}.kv.{namespace}.svc:8080"] == f"{pods[name]}:8080"
        assert _get_text(f"{pods['kv-0']}:8080") == "kv-0\n"
        old = runner.processes("kv-0")["kv"]

        kube.delete(Pod, "kv-0", namespace=namespace)  # the StatefulSet controller recreates it
        poll(
            lambda: (
                runner.processes("kv-0").get("kv") not in (None, old) and runner.pods().get("kv-0")
            ),
            timeout=60,
            message="kv-0 recreated and restarted",
        )
        assert runner.pods()["kv-0"] == pods["kv-0"]  # same address
        # Same claim, same data directory: the restarted process appended to the first boot's file.
        assert poll(
            lambda: _get_text(f"{pods['kv-0']}:8080") == "kv-0\nstopped\nkv-0\n", timeout=30
        )
        pids = [p.pid for name in pods for p in runner.processes(name).values()]
    assert not old.alive()
    # Leaving the runner stops the restarted process (started by its thread) with SIGTERM too.
    claim = kube.get(PersistentVolumeClaim, "data-kv-0", namespace=namespace)
    volume = kube.get(PersistentVolume, claim.spec.volumeName)
    assert (
        Path(volume.spec.hostPath.path) / "boots"
    ).read_text() == "kv-0\nstopped\nkv-0\nstopped\n"
    assert all(
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        for pid in pids
    )


def test_dev_up_serves_the_stack_and_stops_cleanly_on_sigterm(tmp_path: Path, poll: Any) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    from kvtrace.devstack.cluster import kubectl_path

    state = tmp_path / "state.json"
    env = {**os.environ, "KVTRACE_DEV_STATE": str(state)}
    env.pop("KVTRACE_KEEP_WORKDIRS", None)
    up = subprocess.Popen(
        [sys.executable, "-m", "kvtrace", "dev", "up", "--nodes", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        poll(
            lambda: state.exists() or up.poll() is not None,
            timeout=120,
            message="dev up recorded its state",
        )
        assert up.poll() is None, up.communicate()[0]
        exports = subprocess.run(
            [sys.executable, "-m", "kvtrace", "dev", "env"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        found = dict(re.findall(r"^export (\w+)=(\S+)$", exports, flags=re.M))
        assert set(found) == {"KUBECONFIG", "OTEL_EXPORTER_OTLP_ENDPOINT", "KVTRACE_JAEGER_URL"}
        nodes = subprocess.run(
            [kubectl_path(), "--kubeconfig", found["KUBECONFIG"], "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        assert nodes.split() == ["node/kwok-node-0"]
        with urllib.request.urlopen(
            found["KVTRACE_JAEGER_URL"] + "/api/v3/services", timeout=5
        ) as resp:
            assert resp.status == 200
        workdirs = json.loads(state.read_text())["workdirs"]
        assert len(workdirs) == 3 and str(Path(found["KUBECONFIG"]).parent) in workdirs
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            output = up.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert up.returncode == 0, output
    for workdir in workdirs:
        assert processes_mentioning(workdir) == [] and not Path(workdir).exists()
    assert not state.exists()


_ECHO = _http_server(
    'json.dumps({"env": dict(os.environ), '
    '"config": open(os.path.join(os.environ["CONF"], "config.yaml")).read()})'
)


def _echo_deployment(namespace: str, name: str, env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "volumes": [{"name": "conf", "configMap": {"name": "conf"}}],
                        "containers": [
                            {
                                "name": "main",
                                "image": "example/echo:1",
                                "command": ["python3", "-c", _ECHO],
                                "ports": [{"containerPort": 8080}],
                                "env": [
                                    {"name": "CONF", "value": "/etc/app"},
                                    {"name": "BIND", "value": "0.0.0.0"},
                                    *env,
                                ],
                                "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}],
                            }
                        ],
                    },
                },
            },
        },
    ]


@pytest.mark.parametrize("in_env", [True, False], ids=["env-and-file", "file-only"])
def test_pod_runner_rewrites_names_in_env_and_files_and_restarts_when_they_resolve(
    kubectl: Any, namespace: str, poll: Any, pod_runner: Any, in_env: bool
) -> None:
    """A Service's name that starts resolving restarts the pods naming it, in their environment
    or only in a mounted file (a program that reads its configuration once, as the collector
    its exporter's endpoint, must get the address)."""
    upstream = f"http://b.{namespace}.svc:80"
    _apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "conf", "namespace": namespace},
            "data": {"config.yaml": f"listen: 0.0.0.0:8080\nupstream: {upstream}\n"},
        },
        *_echo_deployment(
            namespace, "a", [{"name": "UPSTREAM", "value": upstream}] if in_env else []
        ),
        *_echo_deployment(namespace, "b", []),
    )
    runner_a = pod_runner("app=a")
    ((a_pod, a_address),) = runner_a.wait_running(1, timeout=60).items()
    before = _get_json(f"{a_address}:8080")
    assert before["config"] == f"listen: {a_address}:8080\nupstream: {upstream}\n"
    assert before["env"].get("UPSTREAM") == (upstream if in_env else None)  # b is not run yet
    first = runner_a.processes(a_pod)["main"]

    runner_b = pod_runner("app=b")  # shares the test's endpoint map
    (b_address,) = runner_b.wait_running(1, timeout=60).values()
    poll(lambda: not first.alive(), timeout=60, message="a restarted with b resolved")
    after = poll(lambda: _get_json(f"{a_address}:8080"), timeout=30, message="a answering again")
    assert after["env"].get("UPSTREAM") == (f"http://{b_address}:8080" if in_env else None)
    assert after["config"] == f"listen: {a_address}:8080\nupstream: http://{b_address}:8080\n"
    assert runner_a.processes(a_pod)["main"].alive()


def test_pod_runner_never_runs_a_finished_pod_again_when_its_names_resolve(
    kubectl: Any, namespace: str, poll: Any, pod_runner: Any
) -> None:
    """A pod that ran to completion (restartPolicy Never: a bench) stays finished when a
    Service it names starts resolving, or later moves to another backend, as under a kubelet."""
    once = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "once", "namespace": namespace, "labels": {"app": "once"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "example/once:1",
                    "command": ["python3", "-c", "print('done')"],
                    "env": [{"name": "UPSTREAM", "value": f"http://b.{namespace}.svc:80"}],
                }
            ],
        },
    }
    conf = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "conf", "namespace": namespace},
        "data": {"config.yaml": "listen: 0.0.0.0:8080\n"},
    }
    _apply(kubectl, once, conf, *_echo_deployment(namespace, "b", []))
    runner_once = pod_runner("app=once")
    finished = poll(
        lambda: next(
            (p for p in [runner_once.processes("once").get("main")] if p and p.returncode == 0),
            None,
        ),
        timeout=60,
        message="the pod once ran to completion",
    )
    runner_b = pod_runner("app=b")  # shares the endpoint map: b's Service starts resolving
    runner_b.wait_running(1, timeout=60)
    poll(
        lambda: runner_once.resolve(f"b.{namespace}.svc:80") != f"b.{namespace}.svc:80",
        timeout=30,
        message="b's Service resolving",
    )
    runner_once.sync()  # a whole pass after the name resolved
    assert runner_once.processes("once")["main"] is finished
    assert "once: endpoints" not in (runner_once.workdir / "podrunner.log").read_text()


def test_pod_runner_reports_why_a_pod_cannot_start_and_starts_it_once_it_can(
    kubectl: Any, namespace: str, poll: Any, pod_runner: Any, tmp_path: Path
) -> None:
    _apply(
        kubectl, *_echo_deployment(namespace, "late", [])
    )  # its ConfigMap "conf" does not exist yet
    runner = pod_runner("app=late", workdir=tmp_path / "not-yet-created" / "runner")
    problem = poll(
        lambda: " ".join(runner.errors.values()), timeout=60, message="start problem reported"
    )
    assert "ConfigMap" in problem and "conf" in problem and not runner.pods()
    _apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "conf", "namespace": namespace},
            "data": {"config.yaml": "listen: 0.0.0.0:8080\n"},
        },
    )
    (address,) = runner.wait_running(1, timeout=60).values()
    assert _get_json(f"{address}:8080")["config"] == f"listen: {address}:8080\n"
    assert not runner.errors

    # Its ConfigMap deleted while it runs (as an owner's deletion does before the pods go): it
    # keeps running on its last files, as under a kubelet; not a start problem.
    ((pod_name, process),) = ((n, runner.processes(n)["main"]) for n in runner.pods())
    kubectl("delete", "configmap", "conf", "-n", namespace)
    runner.sync()  # one whole pass, synchronously, after the deletion
    assert not runner.errors
    assert runner.processes(pod_name)["main"] is process and process.alive()
    assert _get_json(f"{address}:8080")["config"] == f"listen: {address}:8080\n"
    log = (runner.workdir / "podrunner.log").read_text()
    assert f"{pod_name}: keeps running on its last files: ConfigMap" in log


def _run_in_pod(
    namespace: str, name: str, command: list[str], config: dict[str, Any], ports: dict[str, int]
) -> list[dict[str, Any]]:
    """ConfigMap + Deployment + Service running ``command`` with ``config`` at /etc/NAME/config.yaml."""
    mount = f"/etc/{name}"
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"config.yaml": yaml.safe_dump(config)},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"app": name},
                "ports": [{"name": port_name, "port": port} for port_name, port in ports.items()],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "volumes": [{"name": "config", "configMap": {"name": name}}],
                        "containers": [
                            {
                                "name": name,
                                "image": f"example/{name}:1",
                                "command": [*command, "--config", f"{mount}/config.yaml"],
                                "ports": [
                                    {"name": n, "containerPort": p} for n, p in ports.items()
                                ],
                                "volumeMounts": [{"name": "config", "mountPath": mount}],
                            }
                        ],
                    },
                },
            },
        },
    ]


def test_collector_and_jaeger_as_pods_carry_a_span_through_service_names(
    kubectl: Any, namespace: str, poll: Any, pod_runner: Any
) -> None:
    from kvtrace.devstack.backends import send_probe_trace
    from kvtrace.shared.jaeger_client import JaegerClient

    wildcard = "0.0.0.0"  # rewritten to each pod's loopback address
    jaeger = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"]}
            },
            "telemetry": {"metrics": {"level": "none"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 1000}}}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "enable_tracing": False,
                "http": {"endpoint": f"{wildcard}:16686"},
                "grpc": {"endpoint": f"{wildcard}:16685"},
            },
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"{wildcard}:4317"}}}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }
    collector = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"{wildcard}:4318"}}}},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {
            "otlp_grpc": {"endpoint": f"jaeger.{namespace}.svc:4317", "tls": {"insecure": True}}
        },
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["otlp_grpc"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}},
        },
    }
    _apply(
        kubectl,
        *_run_in_pod(namespace, "jaeger", ["jaeger"], jaeger, {"otlp-grpc": 4317, "query": 16686}),
        *_run_in_pod(namespace, "collector", ["otelcol-kvtrace"], collector, {"otlp-http": 4318}),
    )
    runner = pod_runner()  # the whole namespace: every name resolves from the first start
    runner.wait_running(2, timeout=90)
    collector_address = runner.resolve(f"collector.{namespace}.svc:4318")
    assert collector_address.startswith("127.")
    client = JaegerClient("http://" + runner.resolve(f"jaeger.{namespace}.svc:16686"))
    # The collector pod may start before Jaeger's does: the runner then restarts it once the
    # name jaeger.NS.svc resolves, and a span it held at that moment is gone (the exporter's
    # queue is in memory), as a collector's would be on any restart. A probe is sent again
    # every 5 s until one arrives whole; each is a new trace id.
    sent: list[str] = []
    last_sent = [0.0]

    def delivered() -> list[Any]:
        if time.monotonic() - last_sent[0] >= 5:
            sent.append(send_probe_trace(f"http://{collector_address}", "devstack-pods"))
            last_sent[0] = time.monotonic()
        return [t for t in client.find_traces("devstack-pods") if t.trace_id in sent]

    traces = poll(
        delivered,
        timeout=90,
        interval=0.5,
        message="the span went collector pod -> jaeger.NS.svc -> Jaeger pod",
    )
    assert all({s.name for s in trace.spans} == {"PUT", "replicate"} for trace in traces)
