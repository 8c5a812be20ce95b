"""The operator as the chart deploys it, for the controlplane tier: the chart installed in the
test's namespace (namespace scope), and ``kvtrace operator run`` started locally with exactly
the chart's arguments (ports aside) and a kubeconfig holding a token of the chart's
ServiceAccount (TokenRequest API): it has the chart's permissions and nothing more."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))

from chartlib import ChartOperator


@pytest.fixture
def chart_operator(
    local_cluster: Any, crds: Any, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ChartOperator]:
    """The chart's operator (its release installs no CRDs: the ``crds`` fixture's are shared)."""
    with ChartOperator(local_cluster, namespace, tmp_path, scope="namespace").installed(
        request
    ) as op:
        yield op
