"""Tracing backends as local processes: the kvtrace collector distribution and Jaeger v2.

Both are OpenTelemetry Collector builds configured by one YAML file. The harness takes a
config dict, moves every listening endpoint (receivers, extensions, the collector's own
metrics, which both default to 8888) to a free loopback port, writes the file, starts the
binary and waits for health. ``endpoints`` tells where everything landed.

    with Jaeger() as jaeger, Collector(forward_to_jaeger(jaeger)) as collector:
        exporter = OTLPSpanExporter(endpoint=collector.otlp_http + "/v1/traces")
        ...
        jaeger.client().find_traces("my-service")
"""

from __future__ import annotations

import copy
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
from pathlib import Path
from typing import Any

import yaml

from kvtrace.devstack import tools
from kvtrace.devstack.proc import (
    Process,
    free_port,
    keep_workdirs,
    no_proxy_env,
    start_with_port_retry,
    urlopen_direct,
)
from kvtrace.shared.jaeger_client import JaegerClient

HOST = "127.0.0.1"
# Components that listen on a top-level ``endpoint`` even when their config is empty.
_LISTENERS = ("health_check", "zipkin", "pprof", "zpages", "expvar")


def _rebind(conf: dict[str, Any], key: str, endpoints: dict[str, str], label: str) -> None:
    address = f"{HOST}:{free_port()}"
    conf[key] = address
    endpoints[label] = address


def _rebind_component(name: str, conf: Any, endpoints: dict[str, str]) -> Any:
    """Give a receiver or extension fresh loopback ports for everything it listens on."""
    conf = {} if conf is None else conf
    protocols = conf.get("protocols")
    if isinstance(protocols, dict):
        for proto, proto_conf in list(protocols.items()):
            proto_conf = {} if proto_conf is None else proto_conf
            _rebind(proto_conf, "endpoint", endpoints, f"{name}/{proto}")
            protocols[proto] = proto_conf
        return conf
    if "endpoint" in conf or name.split("/")[0] in _LISTENERS:
        _rebind(conf, "endpoint", endpoints, name)
    for sub in ("http", "grpc"):  # jaeger_query, healthcheckv2, remote_sampling
        if isinstance(conf.get(sub), dict) or (sub in conf and conf[sub] is None):
            conf[sub] = conf[sub] or {}
            _rebind(conf[sub], "endpoint", endpoints, f"{name}/{sub}")
    return conf


# What needs a Kubernetes API server and the pod's environment (the operator's
# render/environment.py): the k8s_attributes processor and the k8s_api (k8snode) detector.
KUBERNETES_PROCESSOR = "k8s_attributes"
KUBERNETES_DETECTOR = "k8s_api"


def without_kubernetes(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without what needs Kubernetes: a collector run here as a plain process has no
    API server and no node (the controlplane tier runs the rendered config unchanged, behind
    its pod, against the local cluster)."""
    processors = config.get("processors") or {}
    processors.pop(KUBERNETES_PROCESSOR, None)
    for name, processor in processors.items():
        if name.split("/")[0] == "resource_detection" and isinstance(processor, dict):
            detectors = processor.get("detectors") or []
            processor["detectors"] = [d for d in detectors if d != KUBERNETES_DETECTOR]
            processor.pop(KUBERNETES_DETECTOR, None)
    for pipeline in ((config.get("service") or {}).get("pipelines") or {}).values():
        if KUBERNETES_PROCESSOR in (pipeline.get("processors") or []):
            pipeline["processors"].remove(KUBERNETES_PROCESSOR)
    return config


def prepare_config(
    config: dict[str, Any], *, health_extension: str | None = "health_check"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Copy ``config`` with every listening port moved to a free loopback port and what needs
    Kubernetes left out (:func:`without_kubernetes`).

    Exporter endpoints are left alone (they name where data goes). When
    ``health_extension`` is given and absent, it is added so readiness can be checked.
    Returns the new config and ``{label: "127.0.0.1:port"}`` (labels such as
    ``otlp/grpc``, ``otlp/http``, ``health_check``, ``metrics``).
    """
    config = without_kubernetes(copy.deepcopy(config))
    endpoints: dict[str, str] = {}
    for section in ("receivers", "extensions"):
        components = config.get(section) or {}
        for name in list(components):
            components[name] = _rebind_component(name, components[name], endpoints)
        if components:
            config[section] = components
    service = config.setdefault("service", {})
    if health_extension and health_extension not in (config.get("extensions") or {}):
        config.setdefault("extensions", {})[health_extension] = _rebind_component(
            health_extension, None, endpoints
        )
    if health_extension and health_extension not in (service.get("extensions") or []):
        service["extensions"] = [*(service.get("extensions") or []), health_extension]
    telemetry = service.setdefault("telemetry", {})
    metrics = telemetry.get("metrics") or {}
    if metrics.get("level") != "none":
        port = free_port()
        metrics.pop("address", None)
        # The rendered exporter's settings (metric naming) stay; only where it listens moves.
        readers = metrics.get("readers") or [{}]
        rendered = ((readers[0].get("pull") or {}).get("exporter") or {}).get("prometheus") or {}
        prometheus = {**rendered, "host": HOST, "port": port}
        metrics["readers"] = [{"pull": {"exporter": {"prometheus": prometheus}}}]
        endpoints["metrics"] = f"{HOST}:{port}"
    telemetry["metrics"] = metrics
    return config, endpoints


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urlopen_direct(url, timeout=2, context=context) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False


def _http_answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` at all (any status; TLS not verified)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urlopen_direct(url, timeout=2, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _quiet_env() -> dict[str, str]:
    """The harness's environment without OTel SDK settings: the backends must not trace
    themselves into some other test's collector on the default localhost:4317."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_SDK_DISABLED"] = "true"
    env["OTEL_TRACES_EXPORTER"] = "none"
    return no_proxy_env(env)


class _OtelProcess:
    """Shared start/stop of a collector-style binary with a rewritten YAML config."""

    binary_name = ""
    health_extension: str | None = "health_check"

    def __init__(
        self,
        config: dict[str, Any],
        *,
        workdir: Path | None = None,
        name: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.source_config = config
        self.name = name or self.binary_name
        self._given_workdir = workdir
        self.workdir = Path()
        self.startup_timeout = startup_timeout
        self.config: dict[str, Any] = {}
        self.endpoints: dict[str, str] = {}
        self.process: Process | None = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _health_url(self) -> str:
        raise NotImplementedError

    def _ready(self) -> bool:
        return _http_ok(self._health_url())

    def start(self) -> Any:
        binary = tools.binary(self.binary_name)
        if self._given_workdir is not None:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"kvtrace-{self.name}-"))
        config_path = self.workdir / "config.yaml"

        def make() -> Process:
            self.config, self.endpoints = prepare_config(
                self.source_config, health_extension=self.health_extension
            )
            self._after_prepare()
            config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
            return Process(
                self.name,
                [str(binary), "--config", str(config_path)],
                self.workdir / f"{self.name}.log",
                env=_quiet_env(),
            )

        try:
            self.process = start_with_port_retry(
                make, lambda proc: self._ready(), timeout=self.startup_timeout, what="healthy"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _after_prepare(self) -> None:
        """Hook: adjust ``self.config`` after the ports are chosen."""

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._given_workdir is None and self.workdir != Path() and not keep_workdirs():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        return self.process.tail(lines) if self.process else ""

    def endpoint(self, label: str) -> str:
        try:
            return self.endpoints[label]
        except KeyError:
            raise KeyError(
                f"{self.name} has no endpoint {label!r}; it has {sorted(self.endpoints)}"
            ) from None

    @property
    def otlp_grpc(self) -> str:
        """``127.0.0.1:PORT`` of the OTLP gRPC receiver."""
        return self.endpoint("otlp/grpc")

    @property
    def otlp_http(self) -> str:
        """``http://127.0.0.1:PORT`` of the OTLP HTTP receiver (append ``/v1/traces``)."""
        return "http://" + self.endpoint("otlp/http")


class Collector(_OtelProcess):
    """``otelcol-kvtrace --config FILE`` with the given config dict."""

    binary_name = "otelcol-kvtrace"

    def _health_url(self) -> str:
        return f"http://{self.endpoint('health_check')}/"


def jaeger_config(
    *, storage: str = "memory", max_traces: int = 100_000, badger_dir: Path | None = None
) -> dict[str, Any]:
    """Jaeger v2 all-in-one: OTLP in, memory (or badger) storage, query API and UI."""
    if storage == "memory":
        backend: dict[str, Any] = {"memory": {"max_traces": max_traces}}
    elif storage == "badger":
        if badger_dir is None:
            raise ValueError("badger storage needs badger_dir")
        backend = {
            "badger": {
                "directories": {
                    "keys": str(badger_dir / "keys"),
                    "values": str(badger_dir / "values"),
                },
                "ephemeral": False,
            }
        }
    else:
        raise ValueError(f"storage must be memory or badger, not {storage!r}")
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"resource": {"service.name": "jaeger"}, "logs": {"level": "info"}},
        },
        "extensions": {
            # enable_tracing defaults to true: Jaeger would trace itself to localhost:4317.
            "jaeger_query": {
                "storage": {"traces": "traces_store"},
                "enable_tracing": False,
                "http": {},
                "grpc": {},
            },
            "jaeger_storage": {"backends": {"traces_store": backend}},
            "healthcheckv2": {"use_v2": True, "http": {}},
        },
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "traces_store"}},
    }


class Jaeger(_OtelProcess):
    """Jaeger v2 (``jaeger --config FILE``), memory storage by default."""

    binary_name = "jaeger"
    health_extension = None  # healthcheckv2 is part of jaeger_config()

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        ca_file: str | Path | None = None,
        server_name: str | None = None,
        ui: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """``ca_file``: the CA that signed the query port's certificate when the config serves
        it over TLS (a rendered config with TLS on, its default); ``server_name``: the name
        that certificate is checked against (default: the address, 127.0.0.1). ``ui``: serve the
        cached jaeger-ui (``ui.assets_path``): True requires it, None uses it when it is built."""
        super().__init__(config or jaeger_config(), **kwargs)
        self.ca_file, self.server_name, self.ui = ca_file, server_name, ui

    def _after_prepare(self) -> None:
        query = self.config["extensions"]["jaeger_query"]
        if self.ui is False or "ui" in query:
            return
        if self.ui is None and tools.verify(tools.TOOLS["jaeger-ui"]) is not None:
            return
        query["ui"] = {"assets_path": str(tools.jaeger_ui_assets())}

    def _health_url(self) -> str:
        return f"http://{self.endpoint('healthcheckv2/http')}/status"

    def _query_http(self) -> dict[str, Any]:
        return (
            ((self.config or self.source_config).get("extensions") or {}).get("jaeger_query") or {}
        ).get("http") or {}

    @property
    def query_tls(self) -> bool:
        """Whether the query HTTP server serves TLS (its config has a ``tls`` block)."""
        return "tls" in self._query_http()

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifies the query port against ``ca_file`` (None for a plaintext query port)."""
        if not self.query_tls:
            return None
        if self.ca_file is None:
            raise ValueError("the Jaeger config serves its query port over TLS: give ca_file")
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _ready(self) -> bool:
        """Healthy, and the query port answers: anonymously with 200 for a plain config;
        when it serves TLS or wants credentials, any HTTP answer over a TLS session that is not
        verified (as the kubelet's probes do; clients verify with the pipeline's CA)."""
        if not super()._ready():
            return False
        query = self._query_http()
        if "tls" in query or "auth" in query:
            return _http_answers(f"{self.query_url}/api/v3/services")
        return _http_ok(f"{self.query_url}/api/v3/services")

    @property
    def query_url(self) -> str:
        """Base URL of the query service (UI and ``/api/v3``): https when it serves TLS."""
        scheme = "https" if self.query_tls else "http"
        return f"{scheme}://" + self.endpoint("jaeger_query/http")

    def client(self, timeout: float = 5.0, **options: Any) -> JaegerClient:
        """A query client; ``options`` as JaegerClient's (credentials, token, ca_pem,
        server_hostname) for a query port behind auth or TLS. By default a TLS query port is
        verified with ``ca_file`` (for ``server_name``, else the address)."""
        if self.query_tls and self.ca_file and "ca_pem" not in options:
            options["ca_pem"] = Path(self.ca_file).read_text()
            options.setdefault("server_hostname", self.server_name)
        return JaegerClient(self.query_url, timeout=timeout, **options)


def forward_to_jaeger(
    jaeger: Jaeger | str, *, debug: bool = False, batch_timeout: str = "100ms"
) -> dict[str, Any]:
    """A minimal collector config: OTLP in (gRPC and HTTP), batch, OTLP out to Jaeger."""
    target = jaeger.otlp_grpc if isinstance(jaeger, Jaeger) else jaeger
    exporters: dict[str, Any] = {
        "otlp_grpc/jaeger": {"endpoint": target, "tls": {"insecure": True}}
    }
    if debug:
        exporters["debug"] = {"verbosity": "basic"}
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "processors": {"batch": {"timeout": batch_timeout}},
        "exporters": exporters,
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": list(exporters),
                }
            }
        },
    }


VALIDATE_NODE = "validate-node"


def pod_environment(directory: Path) -> dict[str, str]:
    """What a collector pod has that building its components needs: its node's name
    (``K8S_NODE_NAME``, the downward API) and an API server, here a kubeconfig naming a
    loopback port that ``otelcol validate`` never dials (it builds clients, sends nothing)."""
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    return {"K8S_NODE_NAME": VALIDATE_NODE, "KUBECONFIG": str(kubeconfig)}


def validate_config(
    config: dict[str, Any] | str, *, binary: str = "otelcol-kvtrace", workdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``<binary> validate --config FILE`` in a collector pod's environment
    (:func:`pod_environment`); returncode 0 means the config is valid."""
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    with tempfile.TemporaryDirectory(prefix="kvtrace-validate-", dir=workdir) as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        return subprocess.run(
            [str(tools.binary(binary)), "validate", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**no_proxy_env(dict(os.environ)), **pod_environment(Path(tmp))},
        )


def send_probe_trace(otlp_http: str, service: str, ca_file: str | Path | None = None) -> str:
    """Send one two-span trace over OTLP/HTTP to ``otlp_http`` (``http://host:port``, or
    ``https://host:port`` verified against ``ca_file``).

    A ``PUT`` SERVER span (``kvstore.operation=write``) with a ``replicate`` CLIENT child
    whose status is ERROR; returns the trace id (hex). Needs the OTel SDK (``kvtrace[node]``).
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        SimpleSpanProcessor(
            OTLPSpanExporter(
                endpoint=f"{otlp_http}/v1/traces",
                certificate_file=str(ca_file) if ca_file else None,
            )
        )
    )
    tracer = provider.get_tracer("kvtrace.devstack")
    with (
        tracer.start_as_current_span(
            "PUT", kind=SpanKind.SERVER, attributes={"kvstore.operation": "write"}
        ) as root,
        tracer.start_as_current_span("replicate", kind=SpanKind.CLIENT) as child,
    ):
        child.set_status(Status(StatusCode.ERROR, "replica down"))
    provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")
