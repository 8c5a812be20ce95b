"""The containers tier: the images a real cluster pulls, built by `make images`, checked here
against their size budgets (tools/images/budgets.txt), each size printed. Runs wherever docker
or podman works (skips, saying why, elsewhere); an image not built FAILS."""

from __future__ import annotations

import pytest

from kvtrace.devstack import containers
from kvtrace.devstack.pytest_plugin import container_engine
from kvtrace_operator.render import images

pytestmark = pytest.mark.containers

# The budget names of tools/images/budgets.txt and the images they are for.
SHIPPED = {
    "operator": images.OPERATOR_IMAGE,
    "kvnode": images.KVNODE_IMAGE,
    "collector": images.COLLECTOR_IMAGE,
}


@pytest.fixture(scope="module")
def engine() -> str:
    """The engine, with the shipped images built (the tier skips, saying why, without an engine;
    an image not built FAILS)."""
    path, why = container_engine()
    if path is None:
        pytest.skip(f"containers tier needs docker or podman: {why}")
    missing = [image for image in SHIPPED.values() if not containers.image_exists(path, image)]
    if missing:
        pytest.fail(f"images not built: {', '.join(missing)}: run `make images`", pytrace=False)
    return path


# The collector misses its budget: 128 MB stripped (-s -w) for the distribution of
# tools/otelcol/builder-config.yaml (contrib's k8sattributes, loadbalancing and resource
# detection pull in client-go and cloud SDKs). strict: the day it fits, this marker must go.
COLLECTOR_OVER = pytest.mark.xfail(
    strict=True, reason="otelcol-kvtrace is 128 MB > 120 MB (docs/install.md)"
)


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, marks=COLLECTOR_OVER) if name == "collector" else name for name in SHIPPED],
)
def test_image_size_is_within_its_budget(engine: str, name: str) -> None:
    budget = containers.budgets()[name]
    size = containers.image_size(engine, SHIPPED[name]) / 1e6
    print(f"\n{name}: {size:.1f} MB (budget {budget} MB) {SHIPPED[name]}")
    assert size <= budget, f"{SHIPPED[name]} is {size:.1f} MB, over its budget of {budget} MB"
