"""Containers of the local stack (development and tests only): the container engine (found by
``tools/images/engine.sh``, the same choice as ``make images``), its process limits, the local
images and their size budgets (``tools/images/budgets.txt``). How a pod's container runs as a
container is :mod:`kvtrace.devstack.podcontainers`. Imports nothing of the operator or the KV
node.
"""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

from kvtrace.devstack import tools

IMAGES_DIR = tools.REPO_TOOLS / "images"
# The local stack's Jaeger: the cached binary in an image (tools/jaeger/Dockerfile), run in
# place of the upstream image, which this machine may not be able to pull.
LOCAL_JAEGER_IMAGE = f"localhost/kvtrace/jaeger-local:{tools.JAEGER_VERSION}"
# The same for Prometheus (tools/prometheus/Dockerfile), in place of prom/prometheus.
LOCAL_PROMETHEUS_IMAGE = f"localhost/kvtrace/prometheus-local:{tools.PROMETHEUS_VERSION}"
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
