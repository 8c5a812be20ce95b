"""pytest fixtures for the local stack (cluster, namespaces, tracing backends, pod runner).

Loaded by ``tests/conftest.py`` (``pytest_plugins = ["kvtrace.devstack.pytest_plugin"]``).

- ``local_cluster`` (session): a :class:`~kvtrace.devstack.cluster.LocalCluster`, started once.
- ``kube``: its admin lightkube ``Client``; ``kubectl(*args, input=None, check=True)``.
- ``namespace``: a fresh namespace per test (its default ServiceAccount exists), deleted after.
- ``poll(fn, timeout=30, interval=0.2, message="")``: first truthy result of ``fn``.
- ``jaeger(config=None, **kw)`` / ``collector(config=None, *, jaeger=None, **kw)``: started
  backends, stopped after the test.
- ``loopback_ip()``: a loopback address no other user of the harness in this session has.
- ``endpoint_map``: the test's endpoint map file; ``pod_runner(selector=None, namespace=None,
  **kw)``: a started :class:`~kvtrace.devstack.podrunner.PodRunner` sharing that map.
- Tests marked ``kind`` skip, saying why, when Docker or kind is unavailable
  (``kind_unavailable()``); tests/e2e/conftest.py prepares their cluster with ``make kind-up``.
- One way to run the operator against a cluster: ``operator_process(kubeconfig, args, log)``
  (its environment from ``kubeconfig_env``), ``token_kubeconfig(...)`` for a ServiceAccount's
  identity, and ``dump_log_if_failed(request, title, path)`` (every test item keeps its phase
  reports as ``rep_setup``/``rep_call``/``rep_teardown``).

A missing or corrupt cached binary makes the fixture FAIL (never skip) with the hint to run
``kvtrace dev tools``: CI must never silently skip the controlplane and dataplane tiers.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kvtrace.devstack import cluster as cluster_mod
from kvtrace.devstack.proc import Process, StartupError

T = TypeVar("T")

TOOLS_HINT = "Build them with `kvtrace dev tools` (or `make tools`)."


def poll(fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.2, message: str = "") -> T:
    """Call ``fn`` until it returns something truthy; on timeout raise with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s{': ' + message if message else ''}; "
                f"last value: {last!r}"
            )
        time.sleep(interval)


PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def pytest_configure(config: pytest.Config) -> None:
    # Everything the tests talk to is on loopback (127.x.y.z, which no NO_PROXY list covers
    # for every HTTP client); a proxy from the environment could only get in the way.
    for name in PROXY_VARIABLES:
        os.environ.pop(name, None)


def require_binaries(*names: str) -> None:
    """Fail the test (not skip) when a cached binary is missing or corrupt."""
    problems = cluster_mod.missing_binaries(names)
    if problems:
        pytest.fail(
            "local stack binaries unavailable:\n  " + "\n  ".join(problems) + "\n" + TOOLS_HINT,
            pytrace=False,
        )


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[cluster_mod.LocalCluster]:
    require_binaries(*cluster_mod.BINARIES)
    cluster = cluster_mod.LocalCluster()
    try:
        cluster.start()
    except (StartupError, FileNotFoundError) as exc:
        pytest.fail(f"local cluster did not start:\n{exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube(local_cluster: cluster_mod.LocalCluster) -> Any:
    """The admin lightkube ``Client`` of the local cluster."""
    return local_cluster.client


@pytest.fixture
def kubectl(
    local_cluster: cluster_mod.LocalCluster,
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl(*args, input=None, check=True, timeout=60)`` against the local cluster."""
    return local_cluster.kubectl


def _namespace_name(nodeid: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", nodeid.rsplit("::", 1)[-1].lower()).strip("-")
    return f"t-{name[:40].strip('-')}-{secrets.token_hex(2)}"


@pytest.fixture
def namespace(
    local_cluster: cluster_mod.LocalCluster, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace for one test; deleted (not waited for) afterwards."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Namespace, ServiceAccount

    client = local_cluster.client
    name = _namespace_name(request.node.nodeid)
    client.create(Namespace(metadata=ObjectMeta(name=name, labels={"kvtrace.dev/test": "true"})))
    # Pods are rejected until the ServiceAccount controller has made "default".
    poll(
        lambda: client.get(ServiceAccount, "default", namespace=name),
        timeout=30,
        message=f"default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        try:
            client.delete(Namespace, name)
        except Exception:  # noqa: BLE001 - the cluster may already be gone
            pass


@pytest.fixture(name="poll")
def poll_fixture() -> Callable[..., Any]:
    return poll


@pytest.fixture
def loopback_ip() -> Callable[[], str]:
    from kvtrace.devstack.podrunner import ALLOCATOR

    return ALLOCATOR.allocate


@contextlib.contextmanager
def _factory(binary: str, build: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A fixture factory: each call builds and starts a backend; all are stopped at the end."""
    started: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        require_binaries(binary)
        backend = build(*args, **kwargs)
        started.append(backend)
        return backend.start()

    try:
        yield make
    finally:
        for backend in reversed(started):
            backend.stop()


@pytest.fixture
def jaeger() -> Iterator[Callable[..., Any]]:
    """Factory: ``jaeger(config=None, **kwargs)`` → a started Jaeger v2 (memory storage)."""
    from kvtrace.devstack.backends import Jaeger

    with _factory("jaeger", Jaeger) as make:
        yield make


@pytest.fixture
def collector() -> Iterator[Callable[..., Any]]:
    """Factory: ``collector(config=None, *, jaeger=None, **kwargs)`` → a started collector.

    Without ``config`` it forwards OTLP to ``jaeger`` (see ``backends.forward_to_jaeger``).
    """
    from kvtrace.devstack.backends import Collector, forward_to_jaeger

    def build(
        config: dict[str, Any] | None = None, *, jaeger: Any = None, **kwargs: Any
    ) -> Collector:
        if config is None:
            if jaeger is None:
                raise ValueError("collector(): give a config or a jaeger to forward to")
            config = forward_to_jaeger(jaeger)
        return Collector(config, **kwargs)

    with _factory("otelcol-kvtrace", build) as make:
        yield make


@pytest.fixture
def endpoint_map(tmp_path: Path) -> Any:
    """The test's endpoint map (``{"host:port": "127.x.y.z:port"}``), shared by its pod runners."""
    from kvtrace.shared.endpoints import EndpointMapFile

    return EndpointMapFile(tmp_path / "endpoints.json")


@pytest.fixture
def pod_runner(
    local_cluster: cluster_mod.LocalCluster, namespace: str, endpoint_map: Any, tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """Factory: ``pod_runner(selector=None, namespace=None, **kwargs)`` → a started PodRunner.

    Defaults to the test's namespace; all runners of a test share ``endpoint_map``.
    """
    from kvtrace.devstack.podrunner import PodRunner

    started: list[PodRunner] = []
    test_namespace = namespace

    def make(selector: Any = None, *, namespace: str | None = None, **kwargs: Any) -> PodRunner:
        kwargs.setdefault("workdir", tmp_path / f"pods-{len(started)}")
        runner = PodRunner(
            local_cluster,
            namespace or test_namespace,
            selector,
            endpoint_map=endpoint_map,
            **kwargs,
        )
        started.append(runner)
        return runner.start()

    yield make
    for runner in reversed(started):
        runner.stop()


def kind_unavailable() -> str | None:
    """Why the kind tier cannot run here, or None when it can."""
    if shutil.which("kind") is None:
        return "kind is not installed"
    if shutil.which("docker") is None:
        return "docker is not installed"
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if probe.returncode != 0:
        return f"`docker info` failed: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


_ENGINE: list[tuple[str | None, str]] = []


def container_engine() -> tuple[str | None, str]:
    """(a working docker or podman, "") or (None, why not): found once per session."""
    if not _ENGINE:
        from kvtrace.devstack.containers import find_engine

        _ENGINE.append(find_engine())
    return _ENGINE[0]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kind") is not None:
        reason = kind_unavailable()
        if reason:
            pytest.skip(f"kind tier needs Docker and kind: {reason}")
    if item.get_closest_marker("containers") is not None:
        engine, why = container_engine()
        if engine is None:
            pytest.skip(f"containers tier needs docker or podman: {why}")


# ---------------------------------------------------------------- the operator as a process
def kubeconfig_env(kubeconfig: Path | str, **extra: str) -> dict[str, str]:
    """Environment of a child that talks to the cluster of ``kubeconfig`` and no other (no
    inherited ``KUBE*`` variables)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
    return {**env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", **extra}


def operator_process(
    kubeconfig: Path | str, args: list[str], log_path: Path, **env: str
) -> Process:
    """``kvtrace operator run ARGS`` against ``kubeconfig``: a not yet started
    :class:`~kvtrace.devstack.proc.Process` (own process group, log file, clean stop)."""
    argv = [str(Path(sys.executable).parent / "kvtrace"), "operator", "run", *args]
    return Process("operator", argv, log_path, env=kubeconfig_env(kubeconfig, **env))


def token_kubeconfig(
    cluster: cluster_mod.LocalCluster, namespace: str, service_account: str, path: Path
) -> Path:
    """A kubeconfig for ``cluster`` whose only credential is a TokenRequest token (1h) of
    ``namespace``/``service_account``: exactly that ServiceAccount's permissions."""
    import yaml

    token = cluster.kubectl(
        "-n", namespace, "create", "token", service_account, "--duration", "1h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {
                "name": service_account,
                "context": {"cluster": "local", "user": service_account, "namespace": namespace},
            }
        ],
        "current-context": service_account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def dump_log_if_failed(
    request: pytest.FixtureRequest, title: str, path: Path, limit: int = 20000
) -> None:
    """From a fixture's teardown: print the end of ``path`` when the test itself failed."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        sys.stderr.write(f"\n--- {title} ({path}) ---\n{text[-limit:]}\n")
