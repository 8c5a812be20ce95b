"""Fixtures of the containers tier: the engine with the images built, and the operator as the
chart deploys it, running from its image.

``image_operator``: the chart installed in the test's namespace (namespace scope, so its Role
and RoleBinding; no CRDs: the ``crds`` fixture's are shared), its Deployment's pod run as a container of the operator image by a pod runner
in container mode that follows the whole namespace: the operator reaches the API server on
loopback (``KUBERNETES_SERVICE_HOST``/``_PORT``) with the projected token of the chart's
ServiceAccount, and every pod it makes (KV members, collector, Jaeger) and any the test adds
(the bench) runs as a container of its image too. Chart values changed for this host only:
free host ports for kopf's health endpoint and the metrics (the containers share the host's
network), the injection webhook off (the API server could not call it through its Service).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from image_stack import LOCAL_IMAGES, SHIPPED, SIZES, ImageOperator, require_images

from kvtrace.devstack import tools
from kvtrace.devstack.podrunner import PodRunner
from kvtrace.devstack.proc import free_port
from kvtrace.devstack.pytest_plugin import container_engine, dump_log_if_failed, poll

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))

from chartlib import ChartOperator


@pytest.fixture(scope="session")
def engine() -> str:
    """The engine, with the shipped images built (the tier skips, saying why, without an engine;
    an image not built FAILS)."""
    path, why = container_engine()
    if path is None:
        pytest.skip(f"containers tier needs docker or podman: {why}")
    require_images(path, list(SHIPPED.values()))
    return path


@pytest.fixture
def image_operator(
    local_cluster: Any,
    crds: Any,
    namespace: str,
    engine: str,
    endpoint_map: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[ImageOperator]:
    require_images(engine, list(LOCAL_IMAGES.values()))
    health_port = free_port()
    values = (
        *("--set", f"healthPort={health_port}"),
        *("--set", f"metrics.port={free_port()}"),
        *("--set", "webhook.enabled=false"),
    )
    chart = ChartOperator(local_cluster, namespace, tmp_path, scope="namespace", values=values)
    chart.install()
    runner = PodRunner(
        local_cluster,
        namespace,
        workdir=tmp_path / "pods",
        endpoint_map=endpoint_map,
        engine=engine,
        images=LOCAL_IMAGES,
    )
    operator = ImageOperator(chart, runner, health_port)
    try:
        runner.start()
        try:
            poll(operator.healthy, timeout=120, interval=0.5)
        except AssertionError:
            pytest.fail(
                f"the operator container never answered /healthz: {runner.errors}\n"
                f"{chart.log()[-5000:]}",
                pytrace=False,
            )
        yield operator
    finally:
        # The custom resources go while the operator still runs (it removes its finalizers).
        chart.delete_custom_resources()
        runner.stop()  # every container of the namespace stopped and removed
        dump_log_if_failed(request, "operator container log", chart.log_path)
        chart.uninstall()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The shipped images' sizes against their budgets (tools/images/budgets.txt), whenever
    the budget tests ran."""
    if not SIZES:
        return
    terminalreporter.section("image sizes (MB, 10^6 bytes) against their budgets")
    rows = [("IMAGE", "TAG", "MB", "BUDGET", "")]
    rows += [
        (name, SHIPPED[name], f"{size:.1f}", str(budget), "OVER BUDGET" if size > budget else "")
        for name, (size, budget) in sorted(SIZES.items())
    ]
    for line in tools.table(rows):
        terminalreporter.write_line(line)
