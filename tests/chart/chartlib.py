"""Helpers of the chart tests: the helm binary, rendering the chart, the Makefile's
`manifests` recipe (the single source of the install manifest's helm arguments)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kvtrace-operator"
TOP_CRDS = REPO / "crds"
INSTALL_YAML = REPO / "manifests" / "install.yaml"
K8S_VERSION = "1.37"

# The namespace-scoped variant the tests render next to the default values.
NAMESPACED_VALUES = ("--set", "watch.scope=namespace", "--set", "watch.namespaces={team-a,team-b}")


def helm_binary() -> str:
    """The cached helm v4; FAIL (never skip) when it is not built."""
    from kvtrace.devstack import tools

    try:
        return str(tools.binary("helm"))
    except (FileNotFoundError, KeyError) as exc:
        pytest.fail(f"helm v4 is needed for the chart tests: {exc}. Run `kvtrace dev tools` "
                    "(or `make tools`).", pytrace=False)


def helm(*args: str, check: bool = True, kubeconfig: Path | str | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [helm_binary(), *args]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"`helm {shlex.join(args)}` failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}",
                    pytrace=False)
    return proc


def template(*extra: str, release: str = "kvtrace-operator", namespace: str = "kvtrace-system",
             include_crds: bool = False) -> list[dict[str, Any]]:
    """Every object `helm template` renders (CRDs only when asked)."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", "1.37.2"]
    if include_crds:
        args.append("--include-crds")
    out = helm(*args, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def makefile_var(name: str) -> str:
    """The value of a `NAME = value` line of the Makefile."""
    text = (REPO / "Makefile").read_text()
    match = re.search(rf"^{re.escape(name)}\s*[:?]?=\s*(.*)$", text, re.MULTILINE)
    if match is None:
        raise AssertionError(f"Makefile defines no {name}")
    return match.group(1).strip()


def expected_install_yaml() -> str:
    """What `make manifests` writes: the header line, then the helm template output."""
    args = shlex.split(makefile_var("MANIFESTS_HELM_ARGS"))
    header = f"# {makefile_var('MANIFESTS_HEADER')}\n"
    return header + helm(*args).stdout


def rbac_rules(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, rule) of every ClusterRole and Role."""
    return [(f"{obj['kind']}/{obj['metadata']['name']}", rule)
            for obj in objects if obj["kind"] in ("ClusterRole", "Role")
            for rule in obj.get("rules") or ()]
