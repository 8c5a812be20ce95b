"""`kvtrace dev ...`: the local stack for development and tests."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def state_path() -> Path:
    """Where a running `kvtrace dev up` records its endpoints (read by `kvtrace dev env`)."""
    env = os.environ.get("KVTRACE_DEV_STATE")
    if env:
        return Path(env)
    return (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "kvtrace"
        / "dev"
        / "state.json"
    )


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

    up = dev_sub.add_parser(
        "up",
        help="start a local cluster, the collector and Jaeger; stay until Ctrl-C",
        description="Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok "
        "(fake nodes) from the cached binaries, plus Jaeger v2 and the kvtrace collector forwarding "
        "to it, on free loopback ports. Prints the kubeconfig and endpoints, records them for "
        "`kvtrace dev env`, and stops everything on Ctrl-C or SIGTERM.",
    )
    up.add_argument("--nodes", type=int, default=3, help="number of KWOK fake nodes (default 3)")
    up.add_argument(
        "--no-backends", action="store_true", help="cluster only: no collector, no Jaeger"
    )
    up.add_argument(
        "--run-pods",
        metavar="NAMESPACE[/SELECTOR]",
        action="append",
        default=[],
        help="run the processes behind the pods of NAMESPACE (optionally only those "
        "matching the label SELECTOR, e.g. 'demo/app=kv') on loopback addresses; repeatable",
    )
    up.set_defaults(func=_up)

    demo = dev_sub.add_parser(
        "demo",
        help="`make dev`: cluster, operator, backends, an example, load, traces drawn; stay until Ctrl-C",
        description="Starts the local cluster, installs the CRDs, runs the operator, applies an "
        "example and waits until it is Ready, runs the processes behind the operator's collector, "
        "Jaeger and KV pods (exactly the rendered commands, files and environment; only addresses "
        "made local), drives bounded load with `kvtrace bench`, then prints where everything is, a "
        "summary of the load and of the traces in Jaeger, and draws one trace as a waterfall. Stays "
        "up until Ctrl-C or SIGTERM and stops everything it started.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = _demo_defaults()
    demo.add_argument(
        "--exit",
        action="store_true",
        dest="exit_after",
        help="exit after the summary: status 0 only if every step succeeded",
    )
    demo.add_argument(
        "--example",
        type=Path,
        default=defaults.example,
        help="example folder: one KVCluster and the TracingPipeline it references",
    )
    demo.add_argument(
        "--crds", type=Path, default=defaults.crds, help="folder of the CRD manifests"
    )
    demo.add_argument(
        "-n", "--namespace", default=defaults.namespace, help="namespace of the example"
    )
    demo.add_argument(
        "--nodes", type=_positive(int), default=defaults.nodes, help="number of KWOK fake nodes"
    )
    demo.add_argument(
        "--ops",
        type=_positive(int),
        default=defaults.ops,
        help="load: stop after this many operations",
    )
    demo.add_argument(
        "--duration",
        type=_positive(float),
        default=defaults.duration,
        help="load: stop after this many seconds (at most 600)",
    )
    demo.add_argument(
        "--clients", type=_positive(int), default=defaults.clients, help="load: concurrent clients"
    )
    demo.add_argument(
        "--trace-timeout",
        type=_positive(float),
        default=defaults.trace_timeout,
        help="seconds to wait for the traces to reach Jaeger",
    )
    demo.add_argument(
        "--ascii", action="store_true", help="draw the waterfall with ASCII characters only"
    )
    demo.set_defaults(func=_demo)

    env = dev_sub.add_parser(
        "env",
        help="print shell exports for the running `kvtrace dev up`",
        description="Prints KUBECONFIG, OTEL_EXPORTER_OTLP_ENDPOINT, KVTRACE_JAEGER_URL and "
        'KVTRACE_ENDPOINT_MAP of the running `kvtrace dev up`: eval "$(kvtrace dev env)".',
    )
    env.add_argument("--json", action="store_true", help="print the recorded state as JSON")
    env.set_defaults(func=_env)


def _tools(args: argparse.Namespace) -> int:
    from kvtrace.devstack import tools

    if args.list:
        print("\n".join(tools.listing()))
        return 0
    try:
        tools.ensure_all(args.names, force=args.force)
    except tools.MissingPrerequisite as exc:
        print(f"kvtrace dev tools: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as exc:
        print(f"kvtrace dev tools: {exc}")
        return 1
    return 0


def _exports(state: dict[str, Any]) -> dict[str, str]:
    exports = {"KUBECONFIG": state["kubeconfig"]}
    if state.get("otlp_http"):
        exports["OTEL_EXPORTER_OTLP_ENDPOINT"] = state["otlp_http"]
        if state.get("otlp_certificate"):  # `kvtrace dev demo`'s collector serves TLS
            exports["OTEL_EXPORTER_OTLP_CERTIFICATE"] = state["otlp_certificate"]
            if str(state.get("jaeger_url", "")).startswith(
                "https://"
            ):  # and Jaeger's query port, same CA
                exports["KVTRACE_JAEGER_CA_FILE"] = state["otlp_certificate"]
        exports["KVTRACE_JAEGER_URL"] = state["jaeger_url"]
    if state.get("endpoint_map"):
        exports["KVTRACE_ENDPOINT_MAP"] = state["endpoint_map"]
    from kvtrace.devstack.demo import PROMETHEUS_ENV, kv_exports

    if state.get("prometheus_url"):  # `kvtrace dev demo`'s metrics store: `kvtrace top` reads it
        exports[PROMETHEUS_ENV] = state["prometheus_url"]

    exports.update(kv_exports(state.get("kv_ca_file", ""), state.get("kv_token_file", "")))
    return exports


def _up(args: argparse.Namespace) -> int:
    from kvtrace.devstack.backends import Collector, Jaeger, forward_to_jaeger
    from kvtrace.devstack.cluster import LocalCluster
    from kvtrace.devstack.podrunner import PodRunner
    from kvtrace.shared.endpoints import EndpointMapFile

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started: list[Any] = []
    try:
        cluster = LocalCluster(nodes=args.nodes).start()
        started.append(cluster)
        state: dict[str, Any] = {
            "pid": os.getpid(),
            "kubeconfig": str(cluster.kubeconfig),
            "server": cluster.server,
            "startup_seconds": round(cluster.startup_seconds, 1),
        }
        if not args.no_backends:
            jaeger = Jaeger().start()
            started.append(jaeger)
            collector = Collector(forward_to_jaeger(jaeger)).start()
            started.append(collector)
            state.update(
                jaeger_url=jaeger.query_url,
                otlp_http=collector.otlp_http,
                otlp_grpc=collector.otlp_grpc,
                jaeger_otlp_grpc=jaeger.otlp_grpc,
            )
        state["workdirs"] = [str(item.workdir) for item in started]
        if args.run_pods:
            endpoint_map = EndpointMapFile(cluster.workdir / "endpoints.json")
            state["endpoint_map"] = str(endpoint_map.path)
            for spec in args.run_pods:
                namespace, _, selector = spec.partition("/")
                started.append(
                    PodRunner(
                        cluster,
                        namespace,
                        selector or None,
                        endpoint_map=endpoint_map,
                        workdir=cluster.workdir / "pods" / namespace,
                    ).start()
                )
        path = state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2))
        print(f"local cluster up in {cluster.startup_seconds:.1f}s", flush=True)
        print(cluster.describe())
        for key, value in _exports(state).items():
            print(f"export {key}={value}")
        print(
            f'state recorded in {path}; `eval "$(kvtrace dev env)"` in another shell. Ctrl-C stops.',
            flush=True,
        )
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        return 0
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"kvtrace dev up: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping...", flush=True)
        for item in reversed(started):
            item.stop()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state_path().read_text()).get("pid") == os.getpid():
                state_path().unlink()


def _demo_defaults() -> Any:
    from kvtrace.devstack.demo import Options

    return Options()


def _positive(kind: Any) -> Any:
    """An argparse type: a positive ``kind``; argparse names the flag in the error."""

    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if number <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {value!r}")
        return number

    return parse


def _demo(args: argparse.Namespace) -> int:
    from kvtrace.devstack.demo import Demo, Options

    if args.duration > 600:
        print(
            f"kvtrace dev demo: --duration: expected at most 600 seconds, got {args.duration:g}",
            file=sys.stderr,
        )
        return 2
    options = Options(
        example=args.example,
        crds=args.crds,
        namespace=args.namespace,
        nodes=args.nodes,
        ops=args.ops,
        duration=args.duration,
        clients=args.clients,
        trace_timeout=args.trace_timeout,
        exit_after=args.exit_after,
        ascii=args.ascii,
    )
    return Demo(options, state_path=state_path()).run()


def _env(args: argparse.Namespace) -> int:
    path = state_path()
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        print(f"kvtrace dev env: no running `kvtrace dev up` (state file {path})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(state, indent=2))
    else:
        for key, value in _exports(state).items():
            print(f"export {key}={value}")
    return 0
