"""``--version`` of the ``kvtrace`` and ``kubectl-kvtrace`` commands: the installed
distribution's version (pyproject.toml), read from its metadata. Stdlib only."""

from __future__ import annotations

import argparse
from importlib import metadata

DISTRIBUTION = "kvtrace"


def version() -> str:
    """The installed kvtrace version, or ``unknown`` when run from a source tree not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {version()}",
        help="print the version and exit",
    )
