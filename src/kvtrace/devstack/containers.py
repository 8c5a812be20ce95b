"""Containers of the local stack (development and tests only): the container engine, the
local images and their size budgets, and the ``ENGINE run`` command line that runs one
container of a pod exactly as rendered (the pod runner's container mode).

:func:`run_argv` is pure: a pod, one of its containers and where its volumes are on the host
in, an argument vector out. The engine itself is found by ``tools/images/engine.sh`` (the
same choice as ``make images``). Imports nothing of the operator or the KV node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kvtrace.devstack import tools
from kvtrace.devstack.proc import Process

IMAGES_DIR = tools.REPO_TOOLS / "images"
# The local stack's Jaeger: the cached binary in an image (tools/jaeger/Dockerfile), run in
# place of the upstream image, which this machine may not be able to pull.
LOCAL_JAEGER_IMAGE = f"localhost/kvtrace/jaeger-local:{tools.JAEGER_VERSION}"
# Where a container finds the endpoint map's directory (mounted read-only).
ENDPOINT_MAP_DIR = "/run/kvtrace-endpoints"
# Process limits are given explicitly: podman's defaults (nofile 1048576, nproc 4194304)
# exceed what some hosts allow, and runc then refuses to start the container ("error setting
# rlimit"). Open files: the harness's own limits; processes: at most NPROC (higher was refused
# on a host with a hard limit of 96367). tools/images/build.sh gives its builds the same.
NPROC = 32768


def ulimits() -> list[str]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = NPROC if nproc_hard == resource.RLIM_INFINITY else min(NPROC, nproc_hard)
    return [f"nofile={soft}:{hard}", f"nproc={nproc}:{nproc}"]


def find_engine() -> tuple[str | None, str]:
    """(path of a working engine, "") or (None, why there is none)."""
    try:
        proc = subprocess.run(
            ["bash", str(IMAGES_DIR / "engine.sh")],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"tools/images/engine.sh failed: {exc}"
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip(), ""
    return None, (proc.stderr or proc.stdout).strip() or "tools/images/engine.sh found no engine"


def is_podman(engine: str) -> bool:
    return Path(engine).name.startswith("podman")


def budgets(path: Path = IMAGES_DIR / "budgets.txt") -> dict[str, int]:
    """``{image name: MB}`` from tools/images/budgets.txt (the build script's numbers)."""
    found: dict[str, int] = {}
    for line in path.read_text().splitlines():
        words = line.partition("#")[0].split()
        if not words:
            continue
        if len(words) != 2 or not words[1].isdigit():
            raise ValueError(f"{path}: expected lines 'NAME MAX_MB', got {line!r}")
        found[words[0]] = int(words[1])
    return found


def image_size(engine: str, image: str) -> int:
    """Size in bytes the engine reports for a local image (raises if it has none)."""
    proc = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(proc.stdout.strip())


def image_exists(engine: str, image: str) -> bool:
    proc = subprocess.run(
        [engine, "image", "inspect", image], capture_output=True, timeout=60, check=False
    )
    return proc.returncode == 0


@dataclasses.dataclass(frozen=True)
class Mount:
    """One bind mount: a host path at ``target`` in the container."""

    source: Path
    target: str
    read_only: bool


def _security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The effective security context: the container's fields over the pod's."""
    pod_level = dict(pod.get("spec", {}).get("securityContext") or {})
    return {**pod_level, **(container.get("securityContext") or {})}


def _security_flags(engine: str, pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    context = _security(pod, container)
    pod_level = pod.get("spec", {}).get("securityContext") or {}
    flags: list[str] = []
    user = context.get("runAsUser")
    if user is not None:
        group = context.get("runAsGroup")
        flags += ["--user", f"{user}:{group}" if group is not None else str(user)]
    for extra in [pod_level.get("fsGroup"), *(pod_level.get("supplementalGroups") or [])]:
        if extra is not None:
            flags += ["--group-add", str(extra)]
    if context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
        if is_podman(engine):  # podman would add tmpfs mounts of its own; Kubernetes does not
            flags.append("--read-only-tmpfs=false")
    capabilities = context.get("capabilities") or {}
    flags += [f"--cap-drop={cap}" for cap in capabilities.get("drop") or []]
    flags += [f"--cap-add={cap}" for cap in capabilities.get("add") or []]
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if context.get("privileged"):
        flags.append("--privileged")
    return flags


def run_argv(
    engine: str,
    *,
    name: str,
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    image: str,
    args: Sequence[str],
    env_names: Sequence[str],
    mounts: Sequence[Mount],
    command: Sequence[str] = (),
) -> list[str]:
    """``ENGINE run`` for one container: on the host network (the processes bind the pod's
    loopback address, rewritten into their arguments and files by the runner), with the
    rendered user, read-only root, capabilities and privilege escalation, the volumes as bind
    mounts, the environment passed by name (values come from the engine's own environment,
    so secrets never appear in a command line), ``command`` (empty: the image's entrypoint)
    and ``args``."""
    argv = [
        engine,
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        "--pull",
        "never",
        "--stop-timeout",
        "10",
    ]
    argv += [flag for limit in ulimits() for flag in ("--ulimit", limit)]
    argv += _security_flags(engine, pod, container)
    for mount in mounts:
        argv += ["-v", f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}"]
    for env_name in env_names:
        argv += ["-e", env_name]
    if container.get("workingDir"):
        argv += ["--workdir", str(container["workingDir"])]
    if command:
        argv += ["--entrypoint", command[0]]
    return [*argv, image, *command[1:], *args]


class ContainerProcess(Process):
    """``ENGINE run --rm --name NAME ...`` as a :class:`Process`; stopping it also removes the
    container by name (the engine's client may die before its container does)."""

    def __init__(self, engine: str, container_name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine = engine
        self.container_name = container_name

    def start(self) -> Process:
        self.remove()  # a leftover of an interrupted run would hold the name
        return super().start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.remove()

    def remove(self) -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [self.engine, "rm", "--force", "--time", "5", self.container_name],
                capture_output=True,
                timeout=60,
                check=False,
            )
