"""The single `kvtrace` console script.

Each area of the product registers its own subcommands: the modules listed in
COMMAND_MODULES expose ``register(subparsers)``, which adds parsers whose ``func`` default
runs the command. Registering imports nothing heavy; each command imports what it needs
when it runs, so the node image does not need the operator's dependencies and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kvtrace.shared.version import add_version_flag

COMMAND_MODULES = (
    "kvnode.cli",  # node serve, kv get|put|delete, bench
    "kvtrace_operator.cli",  # operator run, render
    "kvtrace.devstack.cli",  # dev tools|up|down|...
    "kvtrace.inspect.cli",
    "kvtrace.queryproxy.cli",  # query-proxy (the Jaeger sidecar of query auth bearer|oidc)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvtrace",
        description="Traced key-value clusters on Kubernetes: node, client, operator and dev tools.",
    )
    add_version_flag(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue  # that part of the product is not installed
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
