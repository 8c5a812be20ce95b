"""The containers tier: the images a real cluster pulls, built by `make images`, checked here
against their size budgets (tools/images/budgets.txt), each size printed, and the language
agent images run as the injection webhook's init containers. Runs wherever docker or podman
works (skips, saying why, elsewhere); an image not built FAILS."""

from __future__ import annotations

import re
import subprocess
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from image_stack import SHIPPED, SIZES

from kvtrace.devstack import containers, podcontainers
from kvtrace_operator.render import injection

pytestmark = pytest.mark.containers


@pytest.mark.parametrize("name", list(SHIPPED))
def test_image_size_is_within_its_budget(engine: str, name: str) -> None:
    budget = containers.budgets()[name]
    size = containers.image_size(engine, SHIPPED[name]) / 1e6
    SIZES[name] = (size, budget)
    assert size <= budget, f"{SHIPPED[name]} is {size:.1f} MB, over its budget of {budget} MB"


# ------------------------------------------------------------------ language agents
PIPELINE = {
    "apiVersion": "kvtrace.dev/v1alpha1",
    "kind": "TracingPipeline",
    "metadata": {"name": "traces", "namespace": "obs", "uid": "p-uid"},
    "spec": {},
}


def injected(annotation: str) -> dict[str, Any]:
    """A bare pod asking for one agent, as the webhook mutates it (render/injection.py)."""
    annotations = {injection.INJECT: "obs/traces", annotation: "true"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
    }
    request = injection.parse_request(annotations, "shop")
    assert request is not None
    return injection.inject(pod, PIPELINE, request)


def agent_paths(container: dict[str, Any]) -> list[str]:
    """The paths the app container's environment points the agent at: the PYTHONPATH
    entries, the -javaagent jar of JAVA_TOOL_OPTIONS."""
    env = {item["name"]: item.get("value", "") for item in container["env"]}
    paths = [entry for entry in env.get("PYTHONPATH", "").split(":") if entry]
    return paths + re.findall(r"-javaagent:(\S+)", env.get("JAVA_TOOL_OPTIONS", ""))


@pytest.mark.parametrize("annotation", [injection.INJECT_PYTHON, injection.INJECT_JAVA])
def test_agent_init_container_fills_the_paths_the_app_container_uses(
    engine: str, annotation: str, tmp_path: Path
) -> None:
    """The init container, run with its rendered command and security context over a bind
    mount standing for the emptyDir, leaves every file the app container's env names."""
    pod = injected(annotation)
    (init,) = pod["spec"]["initContainers"]
    (mount,) = init["volumeMounts"]
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(0o777)  # an emptyDir is writable by the pod's user
    argv = podcontainers.run_argv(
        engine,
        name=f"kvtrace-test-{init['name']}-{uuid.uuid4().hex[:8]}",
        pod=pod,
        container=init,
        image=init["image"],
        args=[],
        env_names=[],
        mounts=[podcontainers.Mount(volume, mount["mountPath"], read_only=False)],
        command=init["command"],
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{init['command']} in {init['image']}: {proc.stderr}"
    (app,) = pod["spec"]["containers"]
    paths = agent_paths(app)
    assert paths and all(
        p.startswith(mount["mountPath"] + "/") or p == mount["mountPath"] for p in paths
    ), paths
    on_host = [volume / Path(p).relative_to(mount["mountPath"]) for p in paths]
    missing = [str(p) for p, host in zip(paths, on_host, strict=True) if not host.exists()]
    assert not missing, f"{init['image']} left no {missing} in {mount['mountPath']}"
    if annotation == injection.INJECT_PYTHON:  # what makes PYTHONPATH start the agent
        assert any((host / "sitecustomize.py").is_file() for host in on_host), on_host
    else:
        (jar,) = on_host
        with zipfile.ZipFile(jar) as archive:
            assert b"Premain-Class:" in archive.read("META-INF/MANIFEST.MF")
