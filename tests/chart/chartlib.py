"""Helpers of the chart tests: the helm binary, rendering the chart, the Makefile's
`manifests` recipe (the single source of the install manifest's helm arguments)."""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.devstack.proc import Process

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
        pytest.fail(
            f"helm v4 is needed for the chart tests: {exc}. Run `kvtrace dev tools` "
            "(or `make tools`).",
            pytrace=False,
        )


def helm(
    *args: str, check: bool = True, kubeconfig: Path | str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    cmd = [helm_binary(), *args]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(
            f"`helm {shlex.join(args)}` failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}",
            pytrace=False,
        )
    return proc


def template(
    *extra: str,
    release: str = "kvtrace-operator",
    namespace: str = "kvtrace-system",
    tests: bool = False,
) -> list[dict[str, Any]]:
    """Every object `helm install` creates, as `helm template` renders them (the CRDs too,
    unless ``crds.install=false``); ``tests``: the `helm test` hook's objects as well."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", "1.37.2"]
    if not tests:
        args.append("--skip-tests")
    out = helm(*args, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def operator_args(*sets: str) -> list[str]:
    """The operator container's arguments as `helm template --set SETTING...` renders them."""
    extra = [arg for setting in sets for arg in ("--set", setting)]
    deployment = next(o for o in template(*extra) if o["kind"] == "Deployment")
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def parse_operator_args(args: list[str]) -> Any:
    """``args`` parsed by the real `kvtrace operator run` parser (argparse.Namespace)."""
    import argparse

    from kvtrace_operator import cli

    parser = argparse.ArgumentParser(prog="kvtrace")
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["operator", "run", *args])


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
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", rule)
        for obj in objects
        if obj["kind"] in ("ClusterRole", "Role")
        for rule in obj.get("rules") or ()
    ]


class ChartOperator:
    """The chart installed on the local cluster, and the operator run locally exactly as the
    chart's Deployment runs it (same arguments; the health and metrics ports moved to free
    loopback ports) with a kubeconfig holding a TokenRequest token of the chart's
    ServiceAccount, so it has exactly the chart's RBAC (the plugin's ``operator_process`` and
    ``token_kubeconfig``). The release installs no CRDs (``crds.install=false``): CRDs are
    cluster-wide, one release could own them, and the tests share the ``crds`` fixture's;
    tests/chart/test_chart_crds_controlplane.py installs and upgrades them on a cluster of its
    own."""

    def __init__(
        self,
        cluster: Any,
        namespace: str,
        workdir: Path,
        *,
        scope: str = "namespace",
        values: tuple[str, ...] = (),
    ) -> None:
        import secrets

        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.scope = scope
        self.values = values
        self.release = f"kvo-{secrets.token_hex(3)}"
        self.log_path = workdir / "operator.log"
        self.health_port = 0
        self.process: Process | None = None
        self.webhook: str | None = None  # the webhook configuration of the started operator

    # ------------------------------------------------------------------ helm
    def helm(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return helm(
            *args,
            "--namespace",
            self.namespace,
            check=check,
            kubeconfig=self.cluster.kubeconfig,
            timeout=timeout,
        )

    def install(self) -> None:
        self.helm(
            "install",
            self.release,
            str(CHART),
            "--set",
            f"watch.scope={self.scope}",
            "--set",
            "crds.install=false",
            *self.values,
            "--wait",
            "--timeout",
            "120s",
        )

    def uninstall(self) -> None:
        self.helm("uninstall", self.release, "--wait", "--timeout", "120s", check=False)

    @contextlib.contextmanager
    def installed(
        self, request: pytest.FixtureRequest, *, start: bool = True
    ) -> Iterator[ChartOperator]:
        """For one test: the chart installed (and the operator started). Afterwards the custom
        resources are deleted while the operator still runs (kopf removes the finalizer it adds
        for its timers, so the namespace can go), the operator is stopped (its log printed if
        the test failed) and the chart uninstalled."""
        from kvtrace.devstack.pytest_plugin import dump_log_if_failed

        try:
            self.install()
            if start:
                self.start()
            yield self
        finally:
            self.delete_custom_resources()
            self.stop()
            dump_log_if_failed(request, "operator log", self.log_path)
            self.uninstall()

    def delete_custom_resources(self) -> None:
        """Every KVCluster and TracingPipeline of the namespace, deleted while the operator
        still runs (kopf removes the finalizer it adds for its timers)."""
        self.cluster.kubectl(
            "-n",
            self.namespace,
            "delete",
            "kvclusters.kvtrace.dev,tracingpipelines.kvtrace.dev",
            "--all",
            "--wait",
            "--timeout=60s",
            check=False,
            timeout=90,
        )

    def manifest(self) -> list[dict[str, Any]]:
        out = self.helm("get", "manifest", self.release).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def deployment(self) -> dict[str, Any]:
        return next(obj for obj in self.manifest() if obj["kind"] == "Deployment")

    def service_account(self) -> str:
        return str(self.deployment()["spec"]["template"]["spec"]["serviceAccountName"])

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
            elif arg.startswith("--webhook-port="):
                arg = f"--webhook-port={free_port()}"
            elif arg.startswith("--webhook-service="):
                # No Service reaches this host's process: the API server calls it on loopback.
                arg = "--webhook-host=127.0.0.1"
            args.append(arg)
        return args

    @staticmethod
    def webhook_configuration(args: list[str]) -> str | None:
        """The MutatingWebhookConfiguration the operator applies when run with ``args`` (None
        when the chart turns the webhook off)."""
        from kvtrace_operator.render.webhook import configuration_name

        parsed = parse_operator_args(args)
        if not parsed.webhook_port:
            return None
        return configuration_name(list(parsed.namespaces or []))

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.popen if self.process else None

    def start(self) -> None:
        """The operator with a kubeconfig whose only credential is a token of the chart's
        ServiceAccount; returns once kopf's /healthz answers."""
        from kvtrace.devstack.pytest_plugin import operator_process, poll, token_kubeconfig

        kubeconfig = token_kubeconfig(
            self.cluster,
            self.namespace,
            self.service_account(),
            self.workdir / "operator.kubeconfig",
        )
        args = self.args()
        self.webhook = self.webhook_configuration(args)
        process = self.process = operator_process(kubeconfig, args, self.log_path).start()

        def up() -> bool:
            if not process.alive():  # pytest.fail is no Exception: poll does not retry it
                pytest.fail(
                    f"the operator exited ({process.returncode}):\n{self.log()[-5000:]}",
                    pytrace=False,
                )
            return self.healthy()

        try:
            poll(up, timeout=60, interval=0.3)
        except AssertionError:
            pytest.fail(f"kopf's /healthz never answered 200:\n{self.log()[-5000:]}", pytrace=False)

    def healthy(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """Stop the operator and delete its webhook configuration (the operator leaves it, like
        a Deployment's operator would, and it would outlive this test)."""
        if self.process is not None:
            self.process.stop(timeout=20)
        if self.webhook is not None:
            self.cluster.kubectl(
                "delete",
                "mutatingwebhookconfiguration",
                self.webhook,
                "--ignore-not-found",
                check=False,
                timeout=60,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def forbidden(self) -> list[str]:
        """Log lines about a refused request (HTTP 403 / Forbidden)."""
        pattern = re.compile(r"(?<![,.])\b403\b|forbidden", re.IGNORECASE)
        return [line for line in self.log().splitlines() if pattern.search(line)]
