"""The browser tests run the tracing dataplane's stack: ``trace_stack`` and the helpers of
tests/tracing (tracing_stack.py), the one place that starts the rendered chain on loopback.

tests/tracing has no ``__init__.py`` (pytest imports its modules by their file names), so its
directory joins ``sys.path`` here and its conftest is loaded under a name of its own: pytest
registers the fixture ``trace_stack`` for this directory from this module's namespace."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TRACING = Path(__file__).resolve().parents[1] / "tracing"
if str(TRACING) not in sys.path:
    sys.path.insert(0, str(TRACING))

_spec = importlib.util.spec_from_file_location("tracing_conftest", TRACING / "conftest.py")
assert _spec is not None and _spec.loader is not None
_tracing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tracing)

trace_stack = _tracing.trace_stack
