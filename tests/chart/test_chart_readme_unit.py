"""The chart's README: its values table is generated from values.schema.json, where every
entry is described (tools/chart/values_readme.py, `make chart-readme`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from chartlib import CHART, REPO

pytestmark = pytest.mark.unit

SCRIPT = REPO / "tools" / "chart" / "values_readme.py"


def test_every_schema_entry_is_described_and_the_readme_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_the_table_lists_every_value_with_its_default() -> None:
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    for name in schema["properties"]:
        assert f"| `{name}` |" in readme, name
    assert '| `image.repository` | string | `"ghcr.io/kvtrace/kvtrace-operator"` |' in readme


def test_a_value_without_description_fails_the_check(tmp_path: object) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import values_readme
    finally:
        sys.path.remove(str(SCRIPT.parent))
    schema = {
        "properties": {
            "a": {"type": "object", "description": "A.", "properties": {"b": {"type": "string"}}}
        }
    }
    assert values_readme.undescribed(schema) == ["a.b"]
