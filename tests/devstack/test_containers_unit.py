"""The pod runner's container mode as pure functions (``podcontainers``: a rendered pod in, the
engine's command line, mounts and environment out), the image size budgets and the engine
finder's refusal."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kvtrace.devstack import containers, podcontainers
from kvtrace.devstack.podcontainers import Mount, run_argv
from kvtrace_operator.render import render_all

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def kv_pod() -> dict[str, Any]:
    """The StatefulSet pod template the operator renders for a plain KVCluster."""
    cluster = {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv", "namespace": "demo"},
        "spec": {"replicas": 3},
    }
    statefulset = next(o for o in render_all([cluster]) if o["kind"] == "StatefulSet")
    return {"metadata": {"name": "kv-0"}, "spec": statefulset["spec"]["template"]["spec"]}


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[n + 1] for n, word in enumerate(argv) if word == flag]


def bare_argv(**overrides: Any) -> list[str]:
    """``run_argv`` for a bare pod and container with nothing else, but ``overrides``."""
    call: dict[str, Any] = {
        "name": "c",
        "pod": {"spec": {}},
        "container": {"name": "x"},
        "image": "i",
        "args": [],
        "env_names": [],
        "mounts": [],
    }
    return run_argv("podman", **{**call, **overrides})


def test_runs_the_rendered_user_read_only_root_and_dropped_capabilities() -> None:
    pod = kv_pod()
    (container,) = pod["spec"]["containers"]
    argv = run_argv(
        "/usr/bin/podman",
        name="c",
        pod=pod,
        container=container,
        image="img",
        args=["--x"],
        env_names=[],
        mounts=[],
        command=container["command"],
    )
    context = {**pod["spec"]["securityContext"], **container["securityContext"]}
    assert pairs(argv, "--user") == [f"{context['runAsUser']}:{context['runAsGroup']}"]
    assert (
        "--read-only" in argv and "--read-only-tmpfs=false" in argv
    )  # no tmpfs Kubernetes would not add
    assert "--cap-drop=ALL" in argv
    assert pairs(argv, "--security-opt") == ["no-new-privileges"]
    assert pairs(argv, "--network") == ["host"] and pairs(argv, "--pull") == ["never"]
    # The rendered command replaces the entrypoint; its arguments follow the image.
    command = container["command"]
    assert pairs(argv, "--entrypoint") == [command[0]]
    assert argv[argv.index("img") :] == ["img", *command[1:], "--x"]


def test_docker_gets_no_podman_only_flag() -> None:
    pod = kv_pod()
    argv = run_argv(
        "/usr/bin/docker",
        name="c",
        pod=pod,
        container=pod["spec"]["containers"][0],
        image="i",
        args=[],
        env_names=[],
        mounts=[],
    )
    assert "--read-only" in argv and not any(word.startswith("--read-only-tmpfs") for word in argv)


def test_without_a_command_the_image_entrypoint_runs_with_the_args() -> None:
    container = {"name": "otelcol", "image": "col", "args": ["--config=/etc/otelcol/config.yaml"]}
    argv = bare_argv(
        container=container, image="local/col", args=container["args"], env_names=["A"]
    )
    assert "--entrypoint" not in argv and "--user" not in argv and "--read-only" not in argv
    assert argv[-2:] == ["local/col", "--config=/etc/otelcol/config.yaml"]


def test_environment_is_passed_by_name_never_by_value(tmp_path: Path) -> None:
    argv = bare_argv(env_names=["KVTRACE_OTLP_TOKEN", "OTEL_SERVICE_NAME"])
    assert pairs(argv, "-e") == ["KVTRACE_OTLP_TOKEN", "OTEL_SERVICE_NAME"]
    assert not any("=" in value for value in pairs(argv, "-e"))


def test_volumes_are_bind_mounts_read_only_unless_writable(tmp_path: Path) -> None:
    mounts = [
        Mount(tmp_path / "config", "/etc/kvnode", True),
        Mount(tmp_path / "data", "/var/lib/kvnode", False),
    ]
    argv = bare_argv(mounts=mounts)
    assert pairs(argv, "-v") == [
        f"{tmp_path}/config:/etc/kvnode:ro",
        f"{tmp_path}/data:/var/lib/kvnode:rw",
    ]


def test_fs_group_and_supplemental_groups_are_added() -> None:
    pod = {"spec": {"securityContext": {"runAsUser": 7, "fsGroup": 8, "supplementalGroups": [9]}}}
    argv = bare_argv(pod=pod, container={"name": "x", "securityContext": {"runAsGroup": 6}})
    assert pairs(argv, "--user") == ["7:6"] and pairs(argv, "--group-add") == ["8", "9"]


def test_process_limits_are_explicit_and_within_the_hosts() -> None:
    argv = bare_argv()
    limits = dict(value.split("=", 1) for value in pairs(argv, "--ulimit"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits["nofile"] == f"{soft}:{hard}"
    nproc = int(limits["nproc"].split(":")[0])
    assert nproc <= containers.NPROC
    assert (
        nproc <= resource.getrlimit(resource.RLIMIT_NPROC)[1]
        or resource.getrlimit(resource.RLIMIT_NPROC)[1] == resource.RLIM_INFINITY
    )


def test_budgets_are_the_issues_and_bad_lines_are_named(tmp_path: Path) -> None:
    assert containers.budgets() == {
        "kvnode": 150,
        "operator": 200,
        "collector": 120,
        "python-agent": 130,
        "java-agent": 150,
    }
    bad = tmp_path / "budgets.txt"
    bad.write_text("kvnode 150\noperator lots\n")
    with pytest.raises(
        ValueError, match=r"budgets.txt: expected lines 'NAME MAX_MB', got 'operator lots'"
    ):
        containers.budgets(bad)


def test_engine_finder_says_why_an_engine_does_not_work(tmp_path: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(containers.IMAGES_DIR / "engine.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "CONTAINER_ENGINE": str(fake)},
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"{fake}: 'docker info' failed: Cannot connect to the Docker daemon" in proc.stderr


def test_rendered_volumes_mount_read_only_unless_a_writable_kind(tmp_path: Path) -> None:
    """The KV pod's own volumes: ConfigMap and Secret read-only, the data claim and /tmp
    (emptyDir) writable, the endpoint map's directory read-only; none without a local dir."""
    pod = kv_pod()
    (container,) = pod["spec"]["containers"]
    # The StatefulSet controller adds each claim template as a volume of the real pod.
    declared = {v["name"] for v in pod["spec"]["volumes"]}
    pod["spec"]["volumes"] += [
        {"name": m["name"], "persistentVolumeClaim": {"claimName": f"{m['name']}-kv-0"}}
        for m in container["volumeMounts"]
        if m["name"] not in declared
    ]
    volumes = {v["name"]: tmp_path / v["name"] for v in pod["spec"]["volumes"]}
    endpoint_map = tmp_path / "map" / "endpoints.json"
    mounts = podcontainers.pod_mounts(pod, container, volumes, endpoint_map)
    assert mounts[0] == Mount(endpoint_map.parent, podcontainers.ENDPOINT_MAP_DIR, True)
    by_target = {m.target: m for m in mounts[1:]}
    assert set(by_target) == {m["mountPath"] for m in container["volumeMounts"]}
    kinds = {v["name"]: v for v in pod["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        volume = kinds[mount["name"]]
        writable = ("emptyDir" in volume or "persistentVolumeClaim" in volume) and not mount.get(
            "readOnly"
        )
        assert by_target[mount["mountPath"]].read_only is not writable, mount
    assert by_target["/tmp"].read_only is False and by_target["/var/lib/kvnode"].read_only is False
    assert podcontainers.pod_mounts(pod, container, {}, endpoint_map) == mounts[:1]


def test_container_env_adds_what_the_kubelet_and_harness_add(tmp_path: Path) -> None:
    env = podcontainers.container_env(
        {"OTEL_SERVICE_NAME": "kv", "HOSTNAME": "overridden"},
        pod_name="kv-0",
        address="127.9.0.4",
        endpoint_map=tmp_path / "endpoints.json",
        api_server={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"},
    )
    assert env == {
        "OTEL_SERVICE_NAME": "kv",
        "HOSTNAME": "kv-0",
        "KVTRACE_ENDPOINT_MAP": f"{podcontainers.ENDPOINT_MAP_DIR}/endpoints.json",
        "KVTRACE_POD_ADDRESS": "127.9.0.4",
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    client = podcontainers.engine_client_env(env, {"PATH": "/bin", "AWS_SECRET": "x"})
    assert client == {"PATH": "/bin", **env}  # nothing else of the host reaches a container


def test_api_server_is_the_kubeconfigs(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "clusters:\n- name: local\n  cluster: {server: 'https://127.0.0.1:41234'}\n"
    )
    assert podcontainers.api_server_env(kubeconfig) == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "41234",
    }


def test_service_names_are_given_to_the_container_as_hosts() -> None:
    hosts = dict.fromkeys(podcontainers.KUBERNETES_SERVICE_NAMES, "127.9.0.9")
    argv = bare_argv(hosts=hosts)
    assert sorted(pairs(argv, "--add-host")) == sorted(f"{h}:127.9.0.9" for h in hosts)
    assert "kubernetes.default.svc" in podcontainers.KUBERNETES_SERVICE_NAMES
    assert argv.index("--add-host") < argv.index("i")  # engine flags, not the image's args


def test_service_forwarder_relays_both_ways_until_stopped() -> None:
    """The kubernetes Service's relay (kube-proxy's job): bytes go to the target and back,
    each connection to its own; stopping it refuses new connections."""
    import socket
    import threading

    from kvtrace.devstack.proc import free_port

    upstream = socket.create_server(("127.0.0.1", 0))
    target = upstream.getsockname()

    def echo() -> None:
        for _ in range(2):
            conn, _ = upstream.accept()
            with conn:
                conn.sendall(b"echo:" + conn.recv(1024))

    threading.Thread(target=echo, daemon=True).start()
    port = free_port()
    forwarder = podcontainers.ServiceForwarder(("127.0.0.1", port), target).start()
    try:
        for word in (b"one", b"two"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(word)
                assert client.recv(1024) == b"echo:" + word
    finally:
        forwarder.stop()
        upstream.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
