"""Shared test configuration: every test belongs to exactly one tier (docs/design.md section 7)."""

from __future__ import annotations

import pytest

TIERS = ("unit", "dataplane", "controlplane", "containers", "kind")

pytest_plugins = ["kvtrace.devstack.pytest_plugin", "kvtrace.devstack.operator_fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tiers = [m.name for m in item.iter_markers() if m.name in TIERS]
        if len(set(tiers)) != 1:
            raise pytest.UsageError(
                f"{item.nodeid}: expected exactly one tier marker of {TIERS}, found {tiers or 'none'}"
            )
