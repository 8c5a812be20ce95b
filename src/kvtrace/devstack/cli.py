"""`kvtrace dev ...`: the local stack for development and tests."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser("dev", help="local development stack (real upstream programs)")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="DEV_COMMAND")

    tools = dev_sub.add_parser(
        "tools",
        help="build and cache kube-apiserver, etcd, kwok, the collector, Jaeger and helm",
        description="Builds each upstream program from its Go module once and caches it by "
        "version under ~/.cache/kvtrace/tools (or $KVTRACE_TOOLS_DIR). Cached, intact builds "
        "are skipped; missing or corrupt ones are rebuilt.",
    )
    tools.add_argument("names", nargs="*", help="tools to build (default: all)")
    tools.add_argument("--force", action="store_true", help="rebuild even if cached")
    tools.add_argument("--list", action="store_true", help="show each tool's cache state and exit")
    tools.set_defaults(func=_tools)


def _tools(args: argparse.Namespace) -> int:
    from kvtrace.devstack import tools

    if args.list:
        for tool in tools.TOOLS.values():
            print(f"{tool.name:12} {tool.version:10} {tools.verify(tool) or 'ok':40} {tool.directory}")
        return 0
    try:
        tools.ensure_all(args.names, force=args.force)
    except (RuntimeError, ValueError) as exc:
        print(f"kvtrace dev tools: {exc}")
        return 1
    return 0
