"""`kvtrace operator run` and `kvtrace render -f FILE...`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.render.images import DEFAULT_IMAGES, OPERATOR_IMAGE
from kvtrace_operator.spec.durations import parse_duration

CANARY_INTERVAL_ENV = "KVTRACE_CANARY_INTERVAL"
CANARY_TIMEOUT_ENV = "KVTRACE_CANARY_TIMEOUT"
TRACE_PIPELINE_ENV = "KVTRACE_TRACE_PIPELINE"
QUERY_PROXY_IMAGE_ENV = "KVTRACE_QUERY_PROXY_IMAGE"
# The operator-wide default images (render/images.py Images): field, flag, env, what it runs.
IMAGE_FLAGS = (
    (
        "kvnode",
        "--kvnode-image",
        "KVTRACE_KVNODE_IMAGE",
        "the KV nodes of a KVCluster without spec.image",
    ),
    (
        "collector",
        "--collector-image",
        "KVTRACE_COLLECTOR_IMAGE",
        "the collectors of a TracingPipeline without spec.collector.image",
    ),
    (
        "jaeger",
        "--jaeger-image",
        "KVTRACE_JAEGER_IMAGE",
        "Jaeger of a TracingPipeline without spec.jaeger.image",
    ),
    (
        "prometheus",
        "--prometheus-image",
        "KVTRACE_PROMETHEUS_IMAGE",
        "the Prometheus of a TracingPipeline (spec.metrics) without spec.metrics.prometheus.image",
    ),
    (
        "query_proxy",
        "--query-proxy-image",
        QUERY_PROXY_IMAGE_ENV,
        "the query-proxy sidecar that spec.jaeger.query.auth modes bearer and oidc add to "
        "Jaeger, unless the pipeline sets proxyImage; the chart passes the operator's own image",
    ),
    (
        "python_agent",
        "--python-agent-image",
        "KVTRACE_PYTHON_AGENT_IMAGE",
        "the init container that copies the Python agent into pods annotated "
        "kvtrace.dev/inject-python",
    ),
    (
        "java_agent",
        "--java-agent-image",
        "KVTRACE_JAVA_AGENT_IMAGE",
        "the init container that copies the Java agent into pods annotated kvtrace.dev/inject-java",
    ),
)
WEBHOOK_PORT_ENV = "KVTRACE_WEBHOOK_PORT"
WEBHOOK_HOST_ENV = "KVTRACE_WEBHOOK_HOST"
WEBHOOK_SERVICE_ENV = "KVTRACE_WEBHOOK_SERVICE"
OFF = ("0", "off", "false", "no", "none", "disabled")
# The packages of the `render` extra: `kvtrace render` says so when one is missing.
RENDER_EXTRA = ("jsonschema", "cel_expr_python")


def seconds(value: str, parameter: str, *, allow_off: bool = False) -> float:
    """Seconds from ``30``, ``1.5``, or a duration such as ``90s``/``5m`` (``0``/``off``
    too when ``allow_off``); ValueError naming ``parameter`` otherwise."""
    text = str(value).strip().lower()
    if allow_off and text in OFF:
        return 0.0
    try:
        number = float(text)
    except ValueError:
        try:
            return parse_duration(text, parameter) / 1e9
        except SpecError:
            number = -1.0
    if number > 0 and number != float("inf"):
        return number
    off = ", or 0/off to disable" if allow_off else ""
    raise ValueError(
        f"{parameter}: expected seconds or a duration such as 60s or 5m{off}, got {value!r}"
    )


def _arg_type(parameter: str, env: str, parse: Any) -> Any:
    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            reason = str(exc).removeprefix(f"{parameter}: ")
            raise argparse.ArgumentTypeError(f"{reason} (flag {parameter} or env {env})") from None

    convert.__name__ = parameter  # argparse names the type in some messages
    return convert


def image_reference(value: str, parameter: str) -> str:
    """An image reference such as ``registry.example/kvtrace-operator:1.2`` or ``...@sha256:...``
    (surrounding blanks dropped); ValueError naming ``parameter`` when empty or with blanks."""
    text = str(value).strip()
    if not text or any(char.isspace() for char in text):
        raise ValueError(
            f"{parameter}: expected an image reference such as {OPERATOR_IMAGE}, got {value!r}"
        )
    return text


def add_images(parser: argparse.ArgumentParser) -> None:
    """The operator-wide default images (``--kvnode-image``, ``--collector-image``,
    ``--jaeger-image``, ``--prometheus-image``, ``--query-proxy-image``,
    ``--python-agent-image``, ``--java-agent-image``, each with its ``KVTRACE_*_IMAGE``
    environment variable), shared by ``operator run`` and ``render``;
    ``images_from_args`` turns them into one ``Images``."""
    for field, flag, env, what in IMAGE_FLAGS:
        default = getattr(DEFAULT_IMAGES, field)
        parser.add_argument(
            flag,
            metavar="IMAGE",
            dest=f"{field}_image",
            default=os.environ.get(env, default),
            type=_arg_type(flag, env, lambda v, f=flag: image_reference(v, f)),
            help=f"image of {what} (env {env}; default: {default})",
        )


def trace_target(value: str) -> tuple[str, str] | None:
    """``NAMESPACE/NAME`` (or empty: no operator tracing)."""
    from kvtrace_operator.tracing import parse_target

    return parse_target(value) if value.strip() else None


def port_number(value: str, parameter: str) -> int:
    """A TCP port, 0 for off; ValueError naming ``parameter`` otherwise."""
    text = str(value).strip()
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(
            f"{parameter}: expected a port from 1 to 65535, or 0 to disable, got {value!r}"
        )
    return int(text)


def service_ref(value: str) -> tuple[str, str] | None:
    """``NAMESPACE/NAME`` of a Service (or empty: none)."""
    text = value.strip()
    if not text:
        return None
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"--webhook-service: expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


def add_webhook(run: argparse.ArgumentParser) -> None:
    """The injection webhook's flags (docs/injection.md)."""
    run.add_argument(
        "--webhook-port",
        metavar="PORT",
        default=os.environ.get(WEBHOOK_PORT_ENV, "0"),
        type=_arg_type(
            "--webhook-port", WEBHOOK_PORT_ENV, lambda v: port_number(v, "--webhook-port")
        ),
        help="serve the injection webhook (kvtrace.dev/inject) on this port and register "
        f"it with the API server; 0 disables (env {WEBHOOK_PORT_ENV}; default: 0, the chart: 9443)",
    )
    run.add_argument(
        "--webhook-host",
        metavar="HOST",
        default=os.environ.get(WEBHOOK_HOST_ENV, "127.0.0.1"),
        help="the address the API server calls the webhook at (https://HOST:PORT), and "
        f"listens on, unless --webhook-service (env {WEBHOOK_HOST_ENV}; default: %(default)s)",
    )
    run.add_argument(
        "--webhook-service",
        metavar="NAMESPACE/NAME",
        default=os.environ.get(WEBHOOK_SERVICE_ENV, ""),
        type=_arg_type("--webhook-service", WEBHOOK_SERVICE_ENV, service_ref),
        help="the API server calls the webhook through this Service (port 443 to "
        f"--webhook-port); the operator then listens on all addresses (env {WEBHOOK_SERVICE_ENV})",
    )


def register(subparsers: Any) -> None:
    operator = subparsers.add_parser("operator", help="the kvtrace operator")
    operator_sub = operator.add_subparsers(dest="operator_command", required=True, metavar="CMD")
    run = operator_sub.add_parser(
        "run",
        help="run the operator (kopf) against the cluster of the current kubeconfig",
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        default=None,
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf liveness endpoint URL (default: %(default)s)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="port of the operator's Prometheus metrics (default: %(default)s; 0 disables)",
    )
    run.add_argument(
        "--peering",
        default=None,
        help="kopf peering name for several operator replicas (default: standalone)",
    )
    run.add_argument(
        "--resync-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="re-reconcile every resource this often, repairing drift such as a child "
        "deleted or edited by hand (default: %(default)s)",
    )
    run.add_argument(
        "--retry-backoff",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="delay before a failed reconcile is retried (default: %(default)s)",
    )
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="on scale-down, how long leaving members may take to hand their data over "
        "before they are removed anyway; 0 removes them at once (default: %(default)s)",
    )
    run.add_argument(
        "--watch-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="server-side timeout of each watch request; the client waits 30s more "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--canary-interval",
        metavar="DURATION",
        default=os.environ.get(CANARY_INTERVAL_ENV, "60s"),
        type=_arg_type(
            "--canary-interval",
            CANARY_INTERVAL_ENV,
            lambda v: seconds(v, "--canary-interval", allow_off=True),
        ),
        help="send a canary trace through every TracingPipeline this often and report "
        f"the TraceDelivery condition; 0 or off disables (env {CANARY_INTERVAL_ENV}; "
        "default: 60s)",
    )
    run.add_argument(
        "--canary-timeout",
        metavar="DURATION",
        default=os.environ.get(CANARY_TIMEOUT_ENV, "20s"),
        type=_arg_type(
            "--canary-timeout", CANARY_TIMEOUT_ENV, lambda v: seconds(v, "--canary-timeout")
        ),
        help="how long the canary is looked for in Jaeger, on top of the pipeline's "
        f"tail-sampling decisionWait (env {CANARY_TIMEOUT_ENV}; default: 20s)",
    )
    run.add_argument(
        "--trace-pipeline",
        metavar="NAMESPACE/NAME",
        default=os.environ.get(TRACE_PIPELINE_ENV, ""),
        type=_arg_type("--trace-pipeline", TRACE_PIPELINE_ENV, trace_target),
        help="export spans of the operator's own reconciles (service kvtrace-operator) "
        f"to this TracingPipeline's collector (env {TRACE_PIPELINE_ENV}; default: off)",
    )
    add_images(run)
    add_webhook(run)
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    run.set_defaults(func=_run)

    render = subparsers.add_parser(
        "render",
        help="check custom resources strictly and print exactly the objects the operator would apply",
        description="Reads KVCluster and TracingPipeline resources from files (a KVCluster and "
        "the TracingPipeline it references may come together), checks each against its CRD's "
        "schema and validation rules as the API server's strict field validation does "
        "(unknown fields are errors; every error is printed, exit status 1), and prints every "
        "child object the operator would apply, from the same pure render functions the "
        "handlers use.",
    )
    render.add_argument(
        "-f",
        "--filename",
        action="append",
        dest="files",
        required=True,
        metavar="FILE|DIR",
        help="a YAML or JSON file of custom resources, a directory of them (its "
        ".json, .yaml and .yml files, as kubectl reads them) or '-' for stdin; "
        "repeatable",
    )
    render.add_argument(
        "-R", "--recursive", action="store_true", help="read directories given to -f recursively"
    )
    render.add_argument(
        "-n",
        "--namespace",
        metavar="NAMESPACE",
        help="namespace of the resources that name none (default: their own, "
        "else default); a resource naming another is an error, as in kubectl",
    )
    render.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        default="yaml",
        help="yaml: multi-document YAML (default); json: one v1 List",
    )
    add_images(render)
    render.set_defaults(func=_render)


def _run(args: Any) -> int:
    from kvtrace_operator.main import run

    return run(args)


def _render(args: Any) -> int:
    try:
        from kvtrace_operator.render_command import main
    except ModuleNotFoundError as exc:
        if exc.name not in RENDER_EXTRA:
            raise
        print(
            f"kvtrace render: error: the {exc.name} package is missing: "
            "install the render extra (pip install 'kvtrace[render]')",
            file=sys.stderr,
        )
        return 2
    return main(args)
