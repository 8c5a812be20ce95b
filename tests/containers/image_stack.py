"""What the containers tier's modules and fixtures share (a module of its own name: no test
imports a ``conftest``): the shipped images by budget name, the local stand-ins for images this
host cannot pull, and :class:`ImageOperator`, the chart's operator running from its image."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from kvtrace.devstack import containers
from kvtrace.devstack.podrunner import PodRunner
from kvtrace_operator.render import images

# The budget names of tools/images/budgets.txt and the images they are for.
SHIPPED = {
    "operator": images.OPERATOR_IMAGE,
    "kvnode": images.KVNODE_IMAGE,
    "collector": images.COLLECTOR_IMAGE,
    "python-agent": images.PYTHON_AGENT_IMAGE,
    "java-agent": images.JAVA_AGENT_IMAGE,
}
# Each shipped image's measured size (MB) and budget (MB), as the budget tests found them:
# printed as a table at the end of the session (conftest.py).
SIZES: dict[str, tuple[float, int]] = {}
# What the pod runner runs in place of a rendered image: Jaeger's and Prometheus's upstream
# images cannot be pulled everywhere; the local ones are the cached binaries
# (tools/jaeger/Dockerfile, tools/prometheus/Dockerfile).
LOCAL_IMAGES = {
    images.JAEGER_IMAGE: containers.LOCAL_JAEGER_IMAGE,
    images.PROMETHEUS_IMAGE: containers.LOCAL_PROMETHEUS_IMAGE,
}


def require_images(engine: str, wanted: list[str]) -> None:
    """FAIL (never skip) when an image is not built."""
    missing = [image for image in wanted if not containers.image_exists(engine, image)]
    if missing:
        pytest.fail(f"images not built: {', '.join(missing)}: run `make images`", pytrace=False)


class ImageOperator:
    """The chart's operator running from its image: ``chart`` (tests/chart/chartlib.py's
    ChartOperator, the release) and ``runner``, which runs every pod of the namespace as
    containers. The operator container's log becomes the chart's ``log_path`` once its pod
    runs, so ``chart.log()`` and ``chart.forbidden()`` read it."""

    def __init__(self, chart: Any, runner: PodRunner, health_port: int) -> None:
        self.chart = chart
        self.runner = runner
        self.health_port = health_port

    def pod(self) -> str:
        """The operator pod's name (the chart's Deployment has one replica)."""
        names = [n for n in self.runner.pods() if n.startswith(f"{self.chart.release}-")]
        assert names, f"no operator pod runs: {self.runner.errors}"
        self.chart.log_path = self.runner.workdir / "logs" / f"{names[0]}_operator.log"
        return names[0]

    def healthy(self) -> bool:
        """kopf's /healthz (the chart's probes) answers 200 on the operator pod's address."""
        address = self.runner.address(self.pod())
        try:
            url = f"http://{address}:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def forbidden(self) -> list[str]:
        """Log lines about a refused request (HTTP 403 / Forbidden)."""
        lines: list[str] = self.chart.forbidden()
        return lines
