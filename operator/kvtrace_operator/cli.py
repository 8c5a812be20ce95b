"""`kvtrace operator run` and `kvtrace render -f FILE...`."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    operator = subparsers.add_parser("operator", help="the kvtrace operator")
    operator_sub = operator.add_subparsers(dest="operator_command", required=True, metavar="CMD")
    run = operator_sub.add_parser(
        "run",
        help="run the operator (kopf) against the cluster of the current kubeconfig",
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces", default=None,
                       help="watch this namespace (repeatable); default: all namespaces")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                     help="kopf liveness endpoint URL (default: %(default)s)")
    run.add_argument("--metrics-port", type=int, default=9090,
                     help="port of the operator's Prometheus metrics (default: %(default)s; 0 disables)")
    run.add_argument("--peering", default=None,
                     help="kopf peering name for several operator replicas (default: standalone)")
    run.add_argument("--resync-interval", type=float, default=60.0, metavar="SECONDS",
                     help="re-reconcile every resource this often, repairing drift such as a child "
                     "deleted or edited by hand (default: %(default)s)")
    run.add_argument("--retry-backoff", type=float, default=5.0, metavar="SECONDS",
                     help="delay before a failed reconcile is retried (default: %(default)s)")
    run.add_argument("--drain-timeout", type=float, default=300.0, metavar="SECONDS",
                     help="on scale-down, how long leaving members may take to hand their data over "
                     "before they are removed anyway; 0 removes them at once (default: %(default)s)")
    run.add_argument("--watch-timeout", type=int, default=300, metavar="SECONDS",
                     help="server-side timeout of each watch request; the client waits 30s more "
                     "(default: %(default)s)")
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    run.set_defaults(func=_run)

    render = subparsers.add_parser(
        "render",
        help="print, as multi-document YAML, exactly the objects the operator would apply",
        description="Reads KVCluster and TracingPipeline resources from files (a KVCluster and "
        "the TracingPipeline it references may come together) and prints every child object "
        "the operator would apply, from the same pure render functions the handlers use.",
    )
    render.add_argument("-f", "--filename", action="append", dest="files", required=True,
                        metavar="FILE", help="a YAML file of custom resources ('-' for stdin); repeatable")
    render.set_defaults(func=_render)


def _run(args: Any) -> int:
    from kvtrace_operator.main import run

    return run(args)


def _render(args: Any) -> int:
    from kvtrace_operator.render_command import main

    return main(args)
