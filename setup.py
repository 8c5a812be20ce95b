"""Build of the kvtrace distribution (metadata in pyproject.toml): the KV node's hot modules
(kvnode.implementation.COMPILED_MODULES) compiled with mypyc into C extensions.

Their .py sources ship beside the extensions (the reference and the KVNODE_PURE_PYTHON=1
fallback). KVTRACE_BUILD_PURE=1 skips the compilation (no C compiler needed). A source tree
without the node's sources (the image's dependency layer) builds nothing. A compilation error
fails the install: a node that silently runs the slower code is not what was asked for.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).parent
IMPLEMENTATION = ROOT / "kvnode" / "kvnode" / "implementation.py"


def ext_modules() -> list[Any]:
    import os

    if not IMPLEMENTATION.is_file():
        return []
    spec = runpy.run_path(str(IMPLEMENTATION))
    if spec["flag"](spec["BUILD_PURE_ENV"], os.environ.get(spec["BUILD_PURE_ENV"])):
        return []
    from mypyc.build import mypycify

    paths = [
        str(Path("kvnode", *name.split(".")).with_suffix(".py"))
        for name in spec["COMPILED_MODULES"]
    ]
    # pyproject.toml's [tool.mypy] (strict) applies to the compiled modules. pip builds in an
    # isolated environment without the node's dependencies (OpenTelemetry, uvloop): there they
    # are Any, so strict mode's complaints about them (subclassing Any, `type: ignore` comments
    # that only the real packages need) are not errors of the build, and modules that are not
    # compiled are followed silently. `make lint` type-checks everything with the real packages.
    relaxed = ["--follow-imports=silent", "--no-warn-unused-ignores", "--allow-subclassing-any"]
    return list(
        mypycify([*relaxed, *paths], opt_level="3", debug_level="0", group_name="kvnode._hotpath")
    )


setup(ext_modules=ext_modules())
