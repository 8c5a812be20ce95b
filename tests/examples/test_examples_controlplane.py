"""Every example on the real local cluster: server-side dry run, real apply, then the
operator, running with exactly the chart's ServiceAccount permissions, drives it to Ready
with every child in place and no request refused (403) anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from example_assertions import apply_example, assert_children, wait_ready
from examples_lib import folders

pytestmark = pytest.mark.controlplane

FOLDERS = folders()


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_example_is_driven_ready_by_the_operator_with_the_charts_permissions(
        folder: Path, chart_operator: Any, kubectl: Any, namespace: str) -> None:
    apply_example(kubectl, namespace, folder)
    wait_ready(kubectl, namespace, folder, timeout=180)
    assert_children(kubectl, namespace, folder)
    assert chart_operator.healthy(), "kopf's /healthz (the chart's probes) stopped answering"
    assert chart_operator.forbidden() == [], "the chart's RBAC refused the operator something"
