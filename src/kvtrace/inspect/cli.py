"""``kvtrace status``, ``kvtrace doctor``, ``kvtrace trace`` and ``kvtrace traces``; the same
commands as the kubectl plugin ``kubectl kvtrace`` (:func:`kubectl_main`).

Bad input prints one line naming the parameter and exits 2 (as argparse does for usage
errors); an API server, collector or Jaeger that cannot be reached prints one line naming the
address and exits 3; ``doctor`` exits 1 when a check fails (``EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kvtrace.inspect.urls import JAEGER_ENV, jaeger_url
from kvtrace.shared.version import add_version_flag

EXIT_CODES = """exit codes:
  0  done (doctor: every check passed)
  1  doctor: a check failed
  2  usage: a bad flag or input, named in the message
  3  the API server, the collector or Jaeger could not be reached"""
COLLECTOR_ENV = "KVTRACE_COLLECTOR_URL"
PROMETHEUS_ENV = "KVTRACE_PROMETHEUS_URL"


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, but the exit-code table of the epilog keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("exit codes:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _kube_args(parser: argparse.ArgumentParser, *, all_namespaces: bool) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace (default: the kubeconfig context's, else 'default')",
    )
    if all_namespaces:
        parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context",
        default=None,
        metavar="NAME",
        help="kubeconfig context to use (default: the current context)",
    )


def _jaeger_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jaeger",
        default=None,
        metavar="URL",
        help=f"Jaeger query base URL, e.g. http://localhost:16686 (default: ${JAEGER_ENV}, "
        "which `kvtrace dev env` sets)",
    )
    parser.add_argument(
        "--jaeger-credentials-file",
        default=None,
        metavar="PATH",
        help="file whose first line is USER:PASSWORD, sent as HTTP Basic when the pipeline's "
        "spec.jaeger.query.auth.mode is basic (default: $KVTRACE_JAEGER_CREDENTIALS), e.g. from "
        "kubectl get secret PIPELINE-jaeger-query-credentials -o jsonpath='{.data.credentials}' "
        "| base64 -d",
    )
    parser.add_argument(
        "--jaeger-token-file",
        default=None,
        metavar="PATH",
        help="file whose first line is a bearer token, sent when the pipeline's "
        "spec.jaeger.query.auth.mode is bearer or oidc (default: $KVTRACE_JAEGER_TOKEN): one line of "
        "the query credentials Secret, or an access token of your OIDC issuer",
    )
    parser.add_argument(
        "--jaeger-ca-file",
        default=None,
        metavar="PATH",
        help="CA bundle of an https query API (spec.security.tls; default: $KVTRACE_JAEGER_CA_FILE), "
        "e.g. kubectl get secret PIPELINE-tls-trust -o jsonpath='{.data.ca\\.crt}' | base64 -d",
    )
    parser.add_argument(
        "--jaeger-server-name",
        default=None,
        metavar="NAME",
        help="name the query API's certificate is checked for when --jaeger names another host, "
        "e.g. PIPELINE-jaeger-query through a port-forward (default: $KVTRACE_JAEGER_SERVER_NAME)",
    )


def _first_line(path: str, option: str) -> str:
    from kvtrace.inspect.errors import InspectError

    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip()
    except OSError as exc:
        raise InspectError(f"{option}: cannot read {path}: {exc.strerror}") from None


def use_jaeger_credentials(args: argparse.Namespace) -> None:
    """Make the ``--jaeger-*`` access options those of every Jaeger query of this command
    (through the environment variables the Jaeger client reads)."""
    from kvtrace.inspect.errors import InspectError
    from kvtrace.shared import jaeger_client

    if args.jaeger_credentials_file is not None:
        line = _first_line(args.jaeger_credentials_file, "--jaeger-credentials-file")
        if ":" not in line or line.startswith(":"):
            raise InspectError(
                "--jaeger-credentials-file: expected USER:PASSWORD on the first line of "
                f"{args.jaeger_credentials_file}"
            )
        os.environ[jaeger_client.CREDENTIALS_ENV] = line
    if args.jaeger_token_file is not None:
        token = _first_line(args.jaeger_token_file, "--jaeger-token-file")
        if not token or any(c.isspace() for c in token):
            raise InspectError(
                f"--jaeger-token-file: expected a token on the first line of {args.jaeger_token_file}"
            )
        os.environ[jaeger_client.TOKEN_ENV] = token
    if args.jaeger_ca_file is not None:
        if not os.path.isfile(args.jaeger_ca_file):
            raise InspectError(f"--jaeger-ca-file: {args.jaeger_ca_file} is not a file")
        os.environ[jaeger_client.CA_FILE_ENV] = args.jaeger_ca_file
    if args.jaeger_server_name is not None:
        os.environ[jaeger_client.SERVER_NAME_ENV] = args.jaeger_server_name


def add_commands(subparsers: Any) -> None:
    status = subparsers.add_parser(
        "status",
        epilog=EXIT_CODES,
        formatter_class=Formatter,
        help="KVClusters and TracingPipelines: conditions, members, sampling, endpoints, events",
        description="Shows KVClusters and TracingPipelines with their conditions, members and their "
        "readiness (from the StatefulSet's pods), the pipeline each cluster uses, its sampling mode and "
        "ratio, the collector and Jaeger endpoints, and recent events. Read-only API calls.",
    )
    status.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="one KVCluster (with its pipeline) or TracingPipeline",
    )
    _kube_args(status, all_namespaces=True)
    status.add_argument(
        "-o",
        "--output",
        default="table",
        choices=("table", "json", "yaml"),
        help="output format (default: table)",
    )
    status.set_defaults(func=_guard(_status))

    doctor = subparsers.add_parser(
        "doctor",
        epilog=EXIT_CODES,
        formatter_class=Formatter,
        help="check that a KVCluster's traces really arrive: each check pass/fail, evidence, fix",
        description="Runs the troubleshooting checklist against a KVCluster and its TracingPipeline: the "
        "collector Service has ready endpoints and accepts OTLP; every member carries the pipeline's "
        "OTel environment; sampling is coherent; batch and memory-limiter settings fit the collector's "
        "resources; a canary trace sent through the collector shows up in Jaeger; every pod asking for "
        "kvtrace.dev/inject is injected (or why not). Exits 1 when a check fails.",
    )
    doctor.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="the KVCluster (without it: only the namespace's injection check)",
    )
    _kube_args(doctor, all_namespaces=False)
    doctor.add_argument(
        "--collector",
        default=None,
        metavar="URL",
        help="collector OTLP/HTTP base URL, e.g. http://localhost:4318 (default: "
        f"${COLLECTOR_ENV}, else the pipeline's endpoint, through the dev endpoint map)",
    )
    _jaeger_arg(doctor)
    doctor.add_argument(
        "--canary-timeout",
        default=None,
        metavar="DURATION",
        help="how long to wait for the canary trace in Jaeger (default: the pipeline's "
        "decisionWait plus 20s)",
    )
    doctor.add_argument("--no-canary", action="store_true", help="skip the canary trace")
    doctor.add_argument(
        "-o",
        "--output",
        default="text",
        choices=("text", "json"),
        help="output format (default: text)",
    )
    doctor.set_defaults(func=_guard(_doctor))

    trace = subparsers.add_parser(
        "trace",
        epilog=EXIT_CODES,
        formatter_class=Formatter,
        help="draw one trace from Jaeger as a waterfall",
        description="Fetches a trace through Jaeger's /api/v3 and draws it: span "
        "tree, durations to scale, service, node and status of each span.",
    )
    trace.add_argument("trace_id", metavar="ID", help="trace id (hex, up to 32 digits)")
    _jaeger_arg(trace)
    trace.add_argument(
        "--ascii", action="store_true", help="ASCII only (no box-drawing characters)"
    )
    trace.set_defaults(func=_guard(_trace))

    traces = subparsers.add_parser(
        "traces",
        epilog=EXIT_CODES,
        formatter_class=Formatter,
        help="find traces of a service in Jaeger and draw them",
        description="Finds recent traces of a service through Jaeger's /api/v3 "
        "and draws each as a waterfall, most recent first.",
    )
    traces.add_argument("--service", required=True, help="service name (OTEL_SERVICE_NAME)")
    traces.add_argument("--operation", default=None, help="only traces with this operation")
    traces.add_argument("--errors", action="store_true", help="only traces with an ERROR span")
    traces.add_argument(
        "--slower-than",
        default=None,
        metavar="DURATION",
        help="only traces at least this long, e.g. 250ms",
    )
    traces.add_argument(
        "--lookback", default="1h", metavar="DURATION", help="how far back (default: 1h)"
    )
    traces.add_argument(
        "--limit", type=_positive_int, default=5, help="at most this many traces (default: 5)"
    )
    traces.add_argument("--summary", action="store_true", help="one line per trace, no waterfall")
    traces.add_argument(
        "--ascii", action="store_true", help="ASCII only (no box-drawing characters)"
    )
    _jaeger_arg(traces)
    traces.set_defaults(func=_guard(_traces))

    top = subparsers.add_parser(
        "top",
        help="RED table per KV operation and member, and the collector's spans, from Prometheus",
        description="Like kubectl top, from the pipeline's metrics store (spec.metrics): request rate, "
        "error ratio and p50/p95/p99 per KV operation and consistency, per member, and the collector's "
        "accepted, refused and dropped spans per second. Prints once unless --watch.",
    )
    _kube_args(top, all_namespaces=False)
    top.add_argument(
        "--pipeline",
        default=None,
        metavar="NAME",
        help="the TracingPipeline whose store to read (default: the namespace's only one)",
    )
    top.add_argument(
        "--prometheus",
        default=None,
        metavar="URL",
        help=f"Prometheus query URL (default: ${PROMETHEUS_ENV}, else the pipeline's "
        "status.endpoints.metrics through the dev endpoint map)",
    )
    top.add_argument("--window", default="1m", metavar="DURATION", help="rate window (default: 1m)")
    top.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    top.add_argument(
        "--interval",
        default="5s",
        metavar="DURATION",
        help="refresh interval with --watch (default: 5s)",
    )
    top.add_argument(
        "-o",
        "--output",
        default="table",
        choices=("table", "json"),
        help="output format (default: table)",
    )
    top.set_defaults(func=_guard(_top))


def register(subparsers: Any) -> None:
    add_commands(subparsers)


def _guard(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``command``; an InspectError is one line on stderr and its exit code (2 bad input,
    3 unreachable), no traceback."""

    def run(args: argparse.Namespace) -> int:
        from kvtrace.inspect.errors import InspectError

        try:
            return command(args)
        except InspectError as exc:
            name = getattr(args, "command", None) or "kvtrace"
            sys.stderr.write(f"kvtrace {name}: error: {exc}\n")
            return exc.exit_code
        except KeyboardInterrupt:
            return 130

    return run


def _kube(args: argparse.Namespace) -> Any:
    from kvtrace.inspect.kube import Kube

    return Kube(args.kubeconfig, context=args.context)


def _status(args: argparse.Namespace) -> int:
    from kvtrace.inspect import status

    kube = _kube(args)
    namespace = (
        None
        if getattr(args, "all_namespaces", False)
        else (args.namespace or kube.default_namespace)
    )
    report = status.gather(kube, namespace)
    if args.name:
        report = status.select(report, args.name)
    sys.stdout.write(status.render(report, args.output))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from kvtrace.inspect import doctor

    use_jaeger_credentials(args)
    kube = _kube(args)
    namespace = args.namespace or kube.default_namespace
    results = doctor.run(
        kube,
        namespace,
        args.name,
        collector=args.collector or os.environ.get(COLLECTOR_ENV),
        jaeger=args.jaeger or os.environ.get(JAEGER_ENV),
        canary=not args.no_canary,
        canary_timeout=args.canary_timeout,
    )
    sys.stdout.write(
        doctor.render_json(results) if args.output == "json" else doctor.render(results)
    )
    return 1 if doctor.failed(results) else 0


def _trace(args: argparse.Namespace) -> int:
    from kvtrace.inspect import jaeger, waterfall

    use_jaeger_credentials(args)
    trace = jaeger.fetch_trace(jaeger_url(args.jaeger), args.trace_id)
    sys.stdout.write(waterfall.render_waterfall(trace, ascii_only=args.ascii))
    return 0


def _traces(args: argparse.Namespace) -> int:
    from kvtrace.inspect import jaeger, waterfall

    use_jaeger_credentials(args)
    url = jaeger_url(args.jaeger)
    found = jaeger.find(
        url,
        args.service,
        operation=args.operation,
        errors=args.errors,
        slower_than=args.slower_than,
        lookback=args.lookback,
        limit=args.limit,
    )
    if not found:
        sys.stdout.write(
            f"No traces of service {args.service!r} match in the last {args.lookback}.\n"
        )
        return 0
    for index, trace in enumerate(found):
        if args.summary:
            sys.stdout.write(waterfall.summary(trace) + "\n")
        else:
            sys.stdout.write(
                ("\n" if index else "") + waterfall.render_waterfall(trace, ascii_only=args.ascii)
            )
    return 0


def prometheus_url(args: argparse.Namespace) -> str:
    """--prometheus, $KVTRACE_PROMETHEUS_URL, else the pipeline's status.endpoints.metrics."""
    from kvtrace.inspect.errors import InspectError
    from kvtrace.inspect.urls import checked_url

    url = args.prometheus or os.environ.get(PROMETHEUS_ENV)
    if not url:
        kube = _kube(args)
        namespace = args.namespace or kube.default_namespace
        found = [
            p
            for p in kube.list("TracingPipeline", namespace)
            if args.pipeline in (None, p["metadata"]["name"])
        ]
        if len(found) != 1:
            names = sorted(p["metadata"]["name"] for p in found)
            raise InspectError(
                f"--pipeline: expected one TracingPipeline in namespace {namespace}, found {names}"
                if found
                else f"no TracingPipeline{' ' + args.pipeline if args.pipeline else ''} "
                f"in namespace {namespace}: give --prometheus URL"
            )
        url = ((found[0].get("status") or {}).get("endpoints") or {}).get("metrics")
        if not url:
            raise InspectError(
                f"TracingPipeline {found[0]['metadata']['name']}: no status.endpoints.metrics "
                "(spec.metrics.enabled is false?): give --prometheus URL"
            )
    return checked_url(url, "--prometheus")


def _top(args: argparse.Namespace) -> int:
    import json
    import time

    from kvtrace.inspect import top
    from kvtrace.inspect.jaeger import parse_duration_ns

    parse_duration_ns(args.window, "--window")
    interval = parse_duration_ns(args.interval, "--interval") / 1e9
    query = top.prometheus_query(prometheus_url(args))
    while True:
        report = top.fetch(query, args.window)
        text = (
            json.dumps(report, indent=2) + "\n"
            if args.output == "json"
            else top.render_table(report, args.window)
        )
        sys.stdout.write(("\x1b[H\x1b[2J" if args.watch and sys.stdout.isatty() else "") + text)
        sys.stdout.flush()
        if not args.watch:
            return 0
        time.sleep(interval)  # the refresh period the user asked for


def build_kubectl_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl kvtrace",
        epilog=EXIT_CODES,
        formatter_class=Formatter,
        description="kvtrace inspection commands as a kubectl plugin.",
    )
    add_version_flag(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(subparsers)
    return parser


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubectl-kvtrace`` console script (``kubectl kvtrace status``)."""
    args = build_kubectl_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(kubectl_main())
