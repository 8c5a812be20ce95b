"""Which implementation of the node's hot path runs: compiled by mypyc, or pure Python.

The normal install (``pip install``, ``make install``, the kvnode image) compiles the modules in
:data:`COMPILED_MODULES` with mypyc (``setup.py``); their ``.py`` sources stay beside the
compiled extensions as the reference the tests compare with and as the fallback. Python's
import system prefers an extension module to a source file of the same name, so the compiled
code runs wherever it was built. ``KVNODE_PURE_PYTHON=1`` selects the pure-Python modules
instead (a meta-path finder that loads every ``kvnode.*`` module from its source), e.g. to
compare the two or to rule the compiled code out while debugging; ``KVTRACE_BUILD_PURE=1`` at
install time skips the compilation altogether.

Stdlib only, and imported by ``kvnode/__init__.py`` before any other kvnode module: it must
never import another kvnode module (setup.py also reads it without importing the package).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PURE_PYTHON_ENV = "KVNODE_PURE_PYTHON"
BUILD_PURE_ENV = "KVTRACE_BUILD_PURE"
# The event loops' hot path (docs/kvnode.md "Where the time goes"): HTTP, the peer protocol's
# both ends, the coordinator and replica, the storage engine's hand-off and commit log, the
# leaf helpers they call per operation, and the span calls every operation makes with
# retroactive sampling (telemetry, the retro buffer and its stand-in spans). Each is mypy
# --strict clean; mypyc compiles them as one group (one shared library) so that calls between
# them are native calls.
COMPILED_MODULES = (
    "kvnode.keys",
    "kvnode.telemetry",
    "kvnode.tracing_retro",
    "kvnode.tracing_held",
    "kvnode.storage.records",
    "kvnode.storage.held",
    "kvnode.storage.commitlog",
    "kvnode.storage.engine",
    "kvnode.replication.hlc",
    "kvnode.replication.quorum",
    "kvnode.replication.ring",
    "kvnode.replication.replica",
    "kvnode.replication.coordinator",
    "kvnode.transport.outbox",
    "kvnode.transport.frames",
    "kvnode.transport.http_parse",
    "kvnode.transport.http_server",
    "kvnode.transport.http_api",
    "kvnode.transport.peer_client",
    "kvnode.transport.peer_server",
)
# A source newer than its extension by more than this is an edit the build has not seen (an
# install writes both within seconds).
STALE_AFTER_S = 5.0
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def flag(name: str, value: str | None) -> bool:
    """An on/off environment variable; ValueError naming it when it is neither."""
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(
        f"{name}: expected one of {', '.join(_TRUE)} (on) or {', '.join(v for v in _FALSE if v)}"
        f" or empty (off), got {value!r}"
    )


class SourceOnlyFinder:
    """A meta-path finder that loads ``kvnode`` submodules from their ``.py`` sources only,
    ahead of the path finder (which would take a compiled extension of the same name)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("kvnode.") or path is None:
            return None
        loaders = [(importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)]
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, *loaders).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def stale_modules(package_dir: Path) -> list[str]:
    """The compiled modules whose ``.py`` source changed after their extension was built (an
    edit in a tree built in place, a checkout of another commit): running the extension would
    silently ignore the edit."""
    stale = []
    for name in COMPILED_MODULES:
        source = package_dir.joinpath(*name.split(".")[1:]).with_suffix(".py")
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            extension = source.with_suffix(suffix)
            try:
                if source.stat().st_mtime > extension.stat().st_mtime + STALE_AFTER_S:
                    stale.append(name)
                break
            except FileNotFoundError:
                continue
    return stale


def select(environ: dict[str, str] | None = None, package_dir: Path | None = None) -> None:
    """Install the source-only finder when ``KVNODE_PURE_PYTHON`` asks for the pure modules,
    or (with a warning) when a compiled module is older than its source."""
    env = os.environ if environ is None else environ
    pure = flag(PURE_PYTHON_ENV, env.get(PURE_PYTHON_ENV))
    if not pure:
        stale = stale_modules(package_dir or Path(__file__).parent)
        if stale:
            warnings.warn(
                f"kvnode: compiled modules older than their sources ({', '.join(stale)}): "
                "running the pure-Python modules; recompile with "
                "`.venv/bin/pip install --no-deps -e .` (or `touch pyproject.toml && make install`)",
                RuntimeWarning,
                stacklevel=2,
            )
            pure = True
    if pure and not any(isinstance(f, SourceOnlyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder())


def is_compiled(module: ModuleType) -> bool:
    """Whether a loaded module is a compiled extension (not its ``.py`` source)."""
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def active() -> str:
    """``compiled`` when every hot module runs compiled, ``pure`` when none does, else
    ``mixed`` (imports the hot modules)."""
    compiled = [is_compiled(importlib.import_module(name)) for name in COMPILED_MODULES]
    return "compiled" if all(compiled) else "mixed" if any(compiled) else "pure"
