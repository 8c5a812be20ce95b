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


class ChartOperator:
    """The chart installed on the local cluster, and the operator run locally exactly as the
    chart's Deployment runs it (same arguments; the health and metrics ports moved to free
    loopback ports) with a kubeconfig holding a TokenRequest token of the chart's
    ServiceAccount, so it has exactly the chart's RBAC."""

    def __init__(self, cluster: Any, namespace: str, workdir: Path, *, scope: str = "namespace",
                 values: tuple[str, ...] = ()) -> None:
        import secrets

        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.scope = scope
        self.values = values
        self.release = f"kvo-{secrets.token_hex(3)}"
        self.log_path = workdir / "operator.log"
        self.health_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ helm
    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--namespace", self.namespace, check=check,
                    kubeconfig=self.cluster.kubeconfig, timeout=timeout)

    def install(self) -> None:
        self.helm("install", self.release, str(CHART), "--set", f"watch.scope={self.scope}",
                  *self.values, "--wait", "--timeout", "120s")

    def uninstall(self) -> None:
        self.helm("uninstall", self.release, "--wait", "--timeout", "120s", check=False)

    def manifest(self) -> list[dict[str, Any]]:
        out = self.helm("get", "manifest", self.release).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def deployment(self) -> dict[str, Any]:
        return next(obj for obj in self.manifest() if obj["kind"] == "Deployment")

    def service_account(self) -> str:
        return str(self.deployment()["spec"]["template"]["spec"]["serviceAccountName"])

    # ------------------------------------------------------------------ identity
    def kubeconfig(self) -> Path:
        """A kubeconfig whose only credential is a token of the chart's ServiceAccount."""
        token = self.cluster.kubectl("-n", self.namespace, "create", "token", self.service_account(),
                                     "--duration", "1h").stdout.strip()
        admin = yaml.safe_load(Path(self.cluster.kubeconfig).read_text())
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator",
                                                          "namespace": self.namespace}}],
            "current-context": "operator",
        }
        path = self.workdir / "operator.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # ------------------------------------------------------------------ process
    def args(self) -> list[str]:
        """The Deployment's container arguments, with ports this host can use."""
        from kvtrace.devstack.proc import free_port

        container = self.deployment()["spec"]["template"]["spec"]["containers"][0]
        self.health_port = free_port()
        args = []
        for arg in container["args"]:
            if arg.startswith("--liveness="):
                arg = f"--liveness=http://127.0.0.1:{self.health_port}/healthz"
            elif arg.startswith("--metrics-port="):
                arg = f"--metrics-port={free_port()}"
            args.append(arg)
        return args

    def start(self) -> None:
        import os
        import sys
        import time
        import urllib.request

        argv = [str(Path(sys.executable).parent / "kvtrace"), "operator", "run", *self.args()]
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
        env.update(KUBECONFIG=str(self.kubeconfig()), PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            log.write(f"$ {shlex.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the operator exited ({self.proc.returncode}):\n{self.log()[-5000:]}",
                            pytrace=False)
            if self.healthy():
                return
            time.sleep(0.3)
        pytest.fail(f"kopf's /healthz never answered 200:\n{self.log()[-5000:]}", pytrace=False)

    def healthy(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        import os
        import signal

        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def forbidden(self) -> list[str]:
        """Log lines about a refused request (HTTP 403 / Forbidden)."""
        pattern = re.compile(r"(?<![,.])\b403\b|forbidden", re.IGNORECASE)
        return [line for line in self.log().splitlines() if pattern.search(line)]
