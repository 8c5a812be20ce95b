"""Fixtures of the security tests: the controlplane tier reuses the operator fixtures of
tests/operator/controlplane (the CRDs installed once, ``kvtrace operator run -n NS`` per test),
run under their own module name so the two conftest modules do not collide."""

from __future__ import annotations

import runpy
from pathlib import Path

_controlplane = runpy.run_path(str(Path(__file__).resolve().parents[1] / "operator" / "controlplane" / "conftest.py"),
                               run_name="security_controlplane_fixtures")
crds = _controlplane["crds"]
operator = _controlplane["operator"]
kube_ns = _controlplane["kube_ns"]
Kube = _controlplane["Kube"]
pytest_runtest_makereport = _controlplane["pytest_runtest_makereport"]
pytest_configure = _controlplane["pytest_configure"]
Operator = _controlplane["Operator"]
