"""`kvtrace dev demo` (`make dev`): the whole product on one machine, in one command.

Steps, each printed with its timing: the local cluster (real kube-apiserver on KWOK nodes);
the CRDs; a namespace; the operator (`kvtrace operator run -n NS`, a local process); the
example applied and driven Ready by the operator; the pod runner running the processes
behind the operator's own collector and Jaeger pods, then behind the KV StatefulSet's pods,
each with exactly the command, arguments, files and environment the operator rendered (only
addresses are made local, see :mod:`kvtrace.devstack.podrunner`); bounded load with
`kvtrace bench`; the traces that reached Jaeger, summarised, and one drawn as a waterfall.
With ``spec.metrics`` (on by default) the pipeline's rendered Prometheus runs first
(:mod:`kvtrace.devstack.demo_metrics`) and the demo ends with the Jaeger UI, Monitor tab and
Prometheus URLs and `kvtrace top`'s RED table of the load.
Then it stays up until Ctrl-C or SIGTERM (or, with ``exit_after``, returns at once) and
stops everything it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from kvtrace.devstack import demo_summary as text
from kvtrace.devstack.demo_summary import DemoError
from kvtrace.shared.jaeger_client import CA_FILE_ENV

PROMETHEUS_ENV = "KVTRACE_PROMETHEUS_URL"  # what `kvtrace top` reads (kvtrace.inspect.cli)

REPO = Path(__file__).resolve().parents[3]
CLIENT_PORT = 7070  # docs/design.md section 3
STEPS = (
    "example",
    "local stack",
    "cluster",
    "CRDs",
    "namespace",
    "operator",
    "example Ready",
    "tracing backends",
    "KV nodes",
    "load",
    "traces in Jaeger",
)
APP_STEP = "application"  # after "KV nodes", for an example with an app/ folder (docs/injection.md)
# With spec.metrics (on by default) and no external store: the pipeline's Prometheus before
# the tracing backends (they are rendered to reach it), its RED summary after the traces.
METRICS_STORE_STEP, METRICS_STEP = "metrics store", "RED metrics"
METRICS_TIMEOUT = 60.0  # seconds for the span metrics to show the load (15 s connector flushes)
APP_FOLDER = "app"
APP_START_SLACK = (
    150.0  # seconds on top of trace_timeout: a JVM and its agent start slowly on 2 busy cores
)


@dataclasses.dataclass
class Options:
    example: Path = REPO / "examples" / "01-basic"
    crds: Path = REPO / "crds"
    namespace: str = "kv-demo"
    nodes: int = 3
    ops: int = 1000
    duration: float = 15.0
    clients: int = 8
    ready_timeout: float = 180.0
    trace_timeout: float = 60.0
    exit_after: bool = False
    ascii: bool = False


class Demo:
    """One run of the demo; :meth:`run` returns the exit status."""

    def __init__(
        self, options: Options, out: TextIO = sys.stdout, state_path: Path | None = None
    ) -> None:
        self.options = options
        self.out = out
        self.state_path = state_path
        self.started: list[Any] = []  # stopped in reverse order
        self.cluster: Any = None
        self.endpoint_map: Any = None
        self.example: text.Example | None = None
        self.kv_runner: Any = None
        self.jaeger_url = ""
        self.collector_http = ""
        self.collector_ca = (
            ""  # the pipeline's trust bundle as a file, when the collector serves TLS
        )
        self.kv_ca = ""  # the KVCluster's CA bundle as a file, when its members serve TLS
        self.kv_token = ""  # its generated client token as a file, when they require one
        self.service = ""  # the members' OTEL_SERVICE_NAME, as rendered
        self.app_services: list[
            str
        ] = []  # the injected applications' OTEL_SERVICE_NAMEs (example app/)
        # The example's pipeline deploys its Prometheus (spec.metrics, on by default): the
        # step count assumes so until the example step has read the pipeline.
        self.metrics_on = True
        self.metrics: Any = None  # its demo_metrics.MetricsStore, once started
        self.backend_pods: dict[str, dict[str, str]] = {}  # component -> {pod: address}
        self.index = 0

    # ------------------------------------------------------------------ output
    def say(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        self.index += 1
        total = len(STEPS) + bool(self.app_folder) + 2 * self.metrics_on
        self.say(text.step_start(self.index, total, name, detail))
        began = time.monotonic()
        try:
            yield
        except DemoError as exc:
            self.say(text.step_end(name, time.monotonic() - began, str(exc)))
            raise StepFailed(name, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any failure of a step is reported as that step's
            problem = f"{type(exc).__name__}: {exc}"
            self.say(text.step_end(name, time.monotonic() - began, problem))
            raise StepFailed(name, problem) from None
        self.say(text.step_end(name, time.monotonic() - began))

    @property
    def app_folder(self) -> Path | None:
        """The example's application (``app/``, applied with ``kubectl apply -k``), if any."""
        folder = self.options.example / APP_FOLDER
        return folder if (folder / "kustomization.yaml").is_file() else None

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        # Ctrl-C and SIGTERM alike end the wait (or abort a step), then everything is stopped;
        # set for SIGINT too, which a shell leaves ignored in background jobs.
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        status = 0
        try:
            try:
                self.steps()
            except StepFailed as failed:
                left_up = not self.options.exit_after and self.cluster is not None
                self.say(text.failure(failed.step, failed.problem, left_up=left_up))
                status = 1
                if left_up:
                    self.wait()
                return status
            if not self.options.exit_after:
                self.say(
                    '\nUp until Ctrl-C (or SIGTERM); `eval "$(kvtrace dev env)"` in another shell.'
                )
                self.wait()
            return status
        except KeyboardInterrupt:
            self.say("\ninterrupted")
            return status or 130
        finally:
            # Cleanup runs to its end: a second Ctrl-C or SIGTERM meanwhile is ignored.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wait(self) -> None:
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)

    def stop(self) -> None:
        if self.started:
            self.say("stopping: KV processes, tracing backends, operator, cluster...")
            began = time.monotonic()
            for item in reversed(self.started):
                with contextlib.suppress(Exception):
                    item.stop()
            self.started.clear()
            self.say(f"stopped in {time.monotonic() - began:.1f}s")
        if self.state_path is not None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self.state_path.read_text()).get("pid") == os.getpid():
                    self.state_path.unlink()

    def steps(self) -> None:
        from kvtrace.devstack import cluster as cluster_mod
        from kvtrace.shared.endpoints import EndpointMapFile

        opts = self.options
        began = time.monotonic()
        with self.step("example", str(opts.example)):
            self.read_example()
        example = self.example
        assert example is not None
        with self.step(
            "local stack",
            "the cached collector and Jaeger builds (`make tools` builds them; "
            "the cluster checks its own as it starts)",
        ):
            try:
                for program in BACKEND_PROGRAMS:
                    self.say(f"    {program}: {cached_program(program)}")
            except (FileNotFoundError, KeyError) as exc:
                raise DemoError(str(exc)) from None
        # The KV processes get the rendered OTel environment and nothing of this shell's.
        for name in [k for k in os.environ if k.startswith(("OTEL_", "KVNODE_"))]:
            del os.environ[name]
        with self.step(
            "cluster",
            f"etcd, kube-apiserver, controller-manager, scheduler, kwok ({opts.nodes} nodes)",
        ):
            self.cluster = cluster_mod.LocalCluster(nodes=opts.nodes)
            self.started.append(self.cluster)
            self.cluster.start()
            self.endpoint_map = EndpointMapFile(self.cluster.workdir / "endpoints.json")
            self.say(self.cluster.describe())
        self.write_state()  # `kvtrace dev env` works from here on (again below, with the backends)
        with self.step("CRDs", str(opts.crds)):
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(opts.crds))
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        with self.step("namespace", opts.namespace):
            self.kubectl("create", "namespace", opts.namespace)
            self.wait_for(
                lambda: (
                    self.kubectl(
                        "-n", opts.namespace, "get", "serviceaccount", "default", check=False
                    ).returncode
                    == 0
                ),
                60,
                "default ServiceAccount",
            )
        with self.step("operator", f"kvtrace operator run -n {opts.namespace}"):
            self.start_operator()
        with self.step("example Ready", f"kubectl -n {opts.namespace} apply -f {opts.example}"):
            self.apply_example(example)
        if self.metrics_on:
            with self.step(
                METRICS_STORE_STEP,
                f"the operator's Prometheus {example.pipeline}-prometheus (spec.metrics)",
            ):
                self.start_metrics_store(example)
        with self.step(
            "tracing backends", f"the operator's {example.pipeline} collector and Jaeger pods"
        ):
            self.run_backends(example)
        self.write_state()
        with self.step("KV nodes", f"the processes behind StatefulSet {example.cluster}'s pods"):
            self.run_kv_nodes(example)
            if self.metrics is not None:
                self.scrape_pipeline_and_members(example)
        self.write_state()  # again, now with the KV cluster's CA bundle and client token
        if self.app_folder is not None:
            with self.step(
                APP_STEP,
                f"kubectl -n {opts.namespace} apply -k {self.app_folder}; its pods "
                "injected by the webhook, run from their mutated spec",
            ):
                self.run_application(self.app_folder)
        load_started = time.monotonic()
        with self.step("load", f"kvtrace bench: at most {opts.ops} ops and {opts.duration:g}s"):
            result = self.load()
        sent = int(result.get("ops", 0)) + int(result.get("errors", 0))
        with self.step("traces in Jaeger", f"service {self.service!r} at {self.jaeger_url}"):
            stats, trace = self.find_traces(sent)
            if self.app_services:
                trace = [self.find_application_trace(service) for service in self.app_services][0]
        red = ""
        if self.metrics_on:
            with self.step(METRICS_STEP, f"kvtrace top from {self.metrics.url}"):
                red = self.metrics.red_summary(load_started, METRICS_TIMEOUT)
        self.say()
        self.say(f"kvtrace dev demo: every step succeeded in {time.monotonic() - began:.1f}s.")
        self.say(
            text.endpoints_text(
                self.exports(),
                self.jaeger_url,
                self.collector_http,
                self.service,
                opts.namespace,
                prometheus_url=self.metrics.url if self.metrics else "",
            )
        )
        self.say(text.load_summary(result))
        self.say(text.traces_summary(stats, sent))
        if red:
            self.say()
            self.say(red.rstrip("\n"))
        self.say()
        origin = (
            f"from the application {self.app_services[0]!r} through the store, "
            if self.app_services
            else ""
        )
        self.say(
            f"One trace, {origin}with spans from {len(text.trace_nodes(trace))} nodes "
            f"(`kvtrace trace {trace.trace_id}`):"
        )
        from kvtrace.inspect.waterfall import render_waterfall

        self.say(render_waterfall(trace, ascii_only=opts.ascii).rstrip("\n"))

    # ------------------------------------------------------------------ steps
    def read_example(self) -> None:
        """Check the example's KVCluster and the TracingPipeline it references."""
        import yaml

        folder = self.options.example
        files = (
            sorted(p for p in folder.glob("*") if p.suffix in (".yaml", ".yml", ".json"))
            if folder.is_dir()
            else []
        )
        if not files:
            raise DemoError(f"--example: {folder} is not a folder with YAML manifests")
        if not (self.options.crds.is_dir() and any(self.options.crds.glob("*.yaml"))):
            raise DemoError(f"--crds: {self.options.crds} is not a folder with the CRD manifests")
        documents = [
            doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc is not None
        ]
        self.example = text.read_example(documents, str(folder))
        self.metrics_on = text.metrics_deployed(documents, self.example.pipeline)

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.cluster.kubectl(
            *args, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise DemoError(
                f"`kubectl {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()}"
            )
        return result

    def wait_for(
        self, check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DemoError(f"no {what} within {timeout:g}s")
            time.sleep(interval)

    def start_operator(self) -> None:
        from kvtrace.devstack.proc import Process, free_port, port_open, urlopen_direct

        port = free_port()
        argv = [
            str(Path(sys.executable).parent / "kvtrace"),
            "operator",
            "run",
            "-n",
            self.options.namespace,
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
            "--metrics-port",
            "0",
            "--resync-interval",
            "5",
            "--retry-backoff",
            "1",
        ]
        webhook = free_port() if self.app_folder is not None else 0
        if webhook:  # the application's pods are injected (the API server calls it on loopback)
            argv += ["--webhook-port", str(webhook), "--webhook-host", "127.0.0.1"]
        env = {
            **self.cluster.env(),
            "PYTHONUNBUFFERED": "1",
            "KVTRACE_ENDPOINT_MAP": str(self.endpoint_map.path),
        }
        process = Process(
            "operator", argv, self.cluster.workdir / "logs" / "operator.log", env=env
        ).start()
        self.started.append(process)

        def healthy() -> bool:
            if not process.alive():
                raise DemoError(process.describe_failure("exited"))
            with (
                contextlib.suppress(OSError),
                urlopen_direct(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp,
            ):
                return bool(resp.status == 200)
            return False

        self.wait_for(healthy, 60, "answer from kopf's /healthz")
        if webhook:
            self.wait_for(
                lambda: port_open("127.0.0.1", webhook, timeout=0.5),
                60,
                f"injection webhook listening on 127.0.0.1:{webhook}",
            )
            self.say(
                f"    injection webhook https://127.0.0.1:{webhook} (MutatingWebhookConfiguration "
                f"kvtrace-injection-{self.options.namespace})"
            )
        self.say(f"    operator pid {process.pid}, log {process.log_path}")

    def apply_example(self, example: text.Example) -> None:
        ns = self.options.namespace
        self.kubectl("-n", ns, "apply", "-f", str(self.options.example))
        result = self.kubectl(
            "-n",
            ns,
            "wait",
            *example.refs,
            "--for=condition=Ready",
            f"--timeout={int(self.options.ready_timeout)}s",
            check=False,
            timeout=self.options.ready_timeout + 30,
        )
        if result.returncode != 0:
            conditions = self.kubectl(
                "-n",
                ns,
                "get",
                *example.refs,
                "-o",
                "jsonpath={range .items[*]}{.kind}/{.metadata.name}: "
                '{.status.conditions}{"\\n"}{end}',
                check=False,
            ).stdout
            raise DemoError(
                f"not Ready within {self.options.ready_timeout:g}s: {result.stderr.strip()}\n{conditions}"
            )
        self.say("    " + result.stdout.strip().replace("\n", "\n    "))
        self.say(f"    example Ready: {', '.join(example.refs)}")

    def pods(self, selector: str) -> list[dict[str, Any]]:
        out = self.kubectl(
            "-n", self.options.namespace, "get", "pods", "-l", selector, "-o", "json"
        ).stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def runner(self, selector: str, count: int, **kwargs: Any) -> Any:
        from kvtrace.devstack.podrunner import PodRunner

        ns = self.options.namespace
        component = selector.rsplit("=", 1)[-1]
        runner = PodRunner(
            self.cluster,
            ns,
            selector,
            endpoint_map=self.endpoint_map,
            workdir=self.cluster.workdir / "pods" / component,
            **kwargs,
        )
        self.started.append(runner)
        runner.start()
        pods = runner.wait_running(count, timeout=90)
        for pod, address in sorted(pods.items()):
            for container, process in runner.processes(pod).items():
                self.say(
                    f"    {pod}/{container} on {address}: pid {process.pid}, log {process.log_path}"
                )
        return runner

    def run_backends(self, example: text.Example) -> None:
        """Jaeger first: the collector's config names Jaeger's OTLP Service, which resolves
        (and renders into its config) once Jaeger's pod runs."""
        from kvtrace.devstack.tools import jaeger_ui_flag
        from kvtrace.shared.endpoints import resolve_url
        from kvtrace_operator.render.labels import (
            COLLECTOR,
            COLLECTOR_LOADBALANCER,
            COLLECTOR_SAMPLING,
            JAEGER,
        )

        def entrypoint(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
            # The images' entrypoint: the same program, from the tool cache; the upstream Jaeger
            # image embeds jaeger-ui, the local build serves the cached one.
            program = text.image_program(container.get("image") or "")
            return [cached_program(program), *([jaeger_ui_flag()] if program == "jaeger" else [])]

        base = (
            f"app.kubernetes.io/name=tracingpipeline,app.kubernetes.io/instance={example.pipeline}"
        )
        for component in (JAEGER, COLLECTOR_SAMPLING, COLLECTOR_LOADBALANCER, COLLECTOR):
            selector = f"{base},app.kubernetes.io/component={component}"
            count = len(self.pods(selector))
            if count:
                runner = self.runner(selector, count, resolve_command=entrypoint)
                self.backend_pods[component] = runner.pods()
        status = (
            json.loads(
                self.kubectl(
                    "-n",
                    self.options.namespace,
                    "get",
                    "tracingpipeline",
                    example.pipeline,
                    "-o",
                    "json",
                ).stdout
            ).get("status")
            or {}
        )
        endpoints = status.get("endpoints") or {}
        for field in ("jaegerQuery", "otlpHttp"):
            if not endpoints.get(field):
                raise DemoError(
                    f"TracingPipeline {example.pipeline}: status.endpoints.{field} is empty "
                    "(the demo needs Jaeger and the collector)"
                )
        self.jaeger_url = resolve_url(endpoints["jaegerQuery"], self.endpoint_map.path)
        self.collector_http = resolve_url(endpoints["otlpHttp"], self.endpoint_map.path)
        context = self.trust_collector(example.pipeline, endpoints["otlpHttp"])

        # With TLS Jaeger's query port serves its leaf too, signed by the same CA.
        jaeger_context = context if self.jaeger_url.startswith("https://") else None
        self.wait_for(
            lambda: _status_of(f"{self.jaeger_url}/api/v3/services", jaeger_context) == 200,
            60,
            f"Jaeger query API at {self.jaeger_url}",
        )
        # OTLP/HTTP answers GET /v1/traces with 405: listening; 401 when the pipeline's bearer
        # token auth (spec.security.auth) refuses a request without the token: listening too.
        self.wait_for(
            lambda: (
                _status_of(f"{self.collector_http}/v1/traces", context) in (200, 400, 401, 405, 415)
            ),
            60,
            f"collector OTLP/HTTP receiver at {self.collector_http}",
        )
        self.say(f"    Jaeger {endpoints['jaegerQuery']} -> {self.jaeger_url}")
        self.say(f"    collector {endpoints['otlpHttp']} -> {self.collector_http}")

    def get_object(self, kind: str, name: str = "", selector: str = "") -> dict[str, Any]:
        """One object of the namespace (or the list matching ``selector``) as JSON."""
        args = [kind, name] if name else [kind, "-l", selector]
        result: dict[str, Any] = json.loads(
            self.kubectl("-n", self.options.namespace, "get", *args, "-o", "json").stdout
        )
        return result

    def start_metrics_store(self, example: text.Example) -> None:
        """The pipeline's rendered Prometheus on its pod's address; its names in the endpoint
        map before the collector and Jaeger render their configs (:mod:`demo_metrics`)."""
        from kvtrace.devstack import demo_metrics
        from kvtrace.devstack.podrunner import ALLOCATOR

        store = demo_metrics.MetricsStore(
            self.get_object,
            self.options.namespace,
            example.pipeline,
            self.endpoint_map,
            self.cluster.workdir / "pods" / "prometheus",
            ALLOCATOR.allocate,
        )
        self.started.append(store)
        self.say("    " + store.start())
        self.metrics = store

    def scrape_pipeline_and_members(self, example: text.Example) -> None:
        from kvtrace.devstack.demo_metrics import kv_job_settings, scrape_targets

        targets = scrape_targets(
            self.options.namespace,
            example.pipeline,
            self.backend_pods,
            example.cluster,
            self.kv_runner.pods(),
        )
        self.metrics.scrape(targets, kv_job_settings(self.kv_ca))
        jobs = ", ".join(f"{job} ({len(found)})" for job, found in targets.items())
        self.say(f"    Prometheus scrapes {jobs}")

    def trust_collector(self, pipeline: str, url: str) -> Any:
        """With TLS (on by default), the pipeline's trust bundle as a file (``collector_ca``,
        exported as OTEL_EXPORTER_OTLP_CERTIFICATE) and an SSL context verifying the collector
        with it; None for a plaintext collector."""
        import ssl

        from kvtrace_operator.render import tls
        from kvtrace_operator.spec import parse_pipeline

        if not url.startswith("https://"):
            return None
        obj = json.loads(
            self.kubectl(
                "-n", self.options.namespace, "get", "tracingpipeline", pipeline, "-o", "json"
            ).stdout
        )
        secret, key = tls.client_ca(parse_pipeline(obj.get("spec")).security.tls, pipeline)
        self.collector_ca = self.secret_file(
            secret,
            key,
            f"{pipeline}-telemetry-ca.crt",
            "the collector's CA bundle (spec.security.tls)",
        )
        return ssl.create_default_context(cafile=self.collector_ca)

    def secret_file(self, secret: str, key: str, file_name: str, what: str) -> str:
        """Key ``key`` of Secret ``secret`` as a private file in the cluster's work directory."""
        import base64

        data = (
            json.loads(
                self.kubectl(
                    "-n", self.options.namespace, "get", "secret", secret, "-o", "json"
                ).stdout
            ).get("data")
            or {}
        )
        if key not in data:
            raise DemoError(f"Secret {secret} has no {key}: {what}")
        path = Path(self.cluster.workdir) / file_name
        path.touch(mode=0o600)
        path.write_bytes(base64.b64decode(data[key]))
        return str(path)

    def trust_kv_cluster(self, name: str) -> Any:
        """The KVCluster's CA bundle and generated client token as files (``kv_ca``,
        ``kv_token``; TLS and tokens are on by default) and an SSL context verifying its
        members with the bundle; None when its members serve plaintext."""
        import ssl

        from kvtrace_operator.render import kvsecurity, names
        from kvtrace_operator.spec import parse_kvcluster

        obj = json.loads(
            self.kubectl(
                "-n", self.options.namespace, "get", "kvcluster", name, "-o", "json"
            ).stdout
        )
        spec = parse_kvcluster(obj.get("spec"))
        if kvsecurity.auth_on(spec):
            self.kv_token = self.secret_file(
                names.kv_client_token(name),
                "token",
                f"{name}-kv-client-token",
                "the KV clients' token (spec.security.auth)",
            )
        if not kvsecurity.tls_on(spec):
            return None
        self.kv_ca = self.secret_file(
            kvsecurity.trust_secret(obj, spec),
            "ca.crt",
            f"{name}-kv-ca.crt",
            "the KV members' CA bundle (spec.security.tls)",
        )
        return ssl.create_default_context(cafile=self.kv_ca)

    def run_kv_nodes(self, example: text.Example) -> None:
        from kvtrace.devstack.proc import urlopen_direct

        status = (
            json.loads(
                self.kubectl(
                    "-n", self.options.namespace, "get", "kvcluster", example.cluster, "-o", "json"
                ).stdout
            ).get("status")
            or {}
        )
        selector = status.get("selector")
        if not selector:
            raise DemoError(f"KVCluster {example.cluster}: status.selector is empty")
        self.kv_runner = self.runner(selector, example.replicas)
        addresses = self.kv_runner.pods()
        context = self.trust_kv_cluster(example.cluster)

        def ready(address: str) -> bool:
            with (
                contextlib.suppress(OSError),
                urlopen_direct(
                    f"{self.kv_scheme}://{address}:{CLIENT_PORT}/readyz", timeout=2, context=context
                ) as r,
            ):
                return bool(r.status == 200)
            return False

        for pod, address in sorted(addresses.items()):
            self.wait_for(functools.partial(ready, address), 60, f"/readyz 200 from {pod}")
        first = sorted(addresses)[0]
        env = next(iter(self.kv_runner.processes(first).values())).env or {}
        self.service = env.get("OTEL_SERVICE_NAME", "")
        if not self.service:
            raise DemoError(
                f"{first}: no OTEL_SERVICE_NAME in its environment (is the KVCluster traced?)"
            )
        self.say(
            f"    {len(addresses)} KV processes started ({', '.join(sorted(addresses))}); "
            f"{first}'s OTel environment, as the operator rendered it:"
        )
        for line in text.env_lines(env):
            self.say(f"      {line}")

    @property
    def kv_scheme(self) -> str:
        return "https" if self.kv_ca else "http"

    def run_application(self, folder: Path) -> None:
        """Apply the example's application; check its pods were injected; run them (agents'
        init containers included) from their mutated spec."""
        from kvtrace.devstack.podrender import agent_image_roots
        from kvtrace_operator.render import injection

        ns = self.options.namespace
        self.kubectl("-n", ns, "apply", "-k", str(folder))
        deployments = [
            d
            for d in json.loads(self.kubectl("-n", ns, "get", "deployments", "-o", "json").stdout)[
                "items"
            ]
            if injection.INJECT in ((d["spec"]["template"]["metadata"].get("annotations")) or {})
        ]
        if not deployments:
            raise DemoError(
                f"{folder}: no Deployment whose pod template asks for {injection.INJECT}"
            )
        roots = agent_image_roots()
        for deployment in deployments:
            selector = ",".join(
                f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
            )
            replicas = int(deployment["spec"].get("replicas", 1))
            pods = self.wait_for(
                functools.partial(self.running_pods, selector, replicas),
                60,
                f"{replicas} running pod(s) of Deployment {deployment['metadata']['name']}",
            )
            for pod in pods:
                annotations = pod["metadata"].get("annotations") or {}
                if not annotations.get(injection.INJECTED):
                    why = annotations.get(injection.INJECTION_ERROR) or "the webhook did not answer"
                    raise DemoError(f"pod {pod['metadata']['name']} not injected: {why}")
                missing = [
                    c["image"]
                    for c in pod["spec"].get("initContainers") or []
                    if c["image"] not in roots
                ]
                if missing:
                    raise DemoError(
                        f"no local copy of {', '.join(missing)}: run `kvtrace dev tools python-agent`"
                    )
            runner = self.runner(selector, replicas, image_roots=roots)
            first = sorted(runner.pods())[0]
            env = next(iter(runner.processes(first).values())).env or {}
            self.app_services.append(env.get("OTEL_SERVICE_NAME", ""))
            agent = " ".join(
                f"{name}={env[name]}" for name in ("PYTHONPATH", "JAVA_TOOL_OPTIONS") if name in env
            )
            self.say(
                f"    {first}: injected by {pod['metadata']['annotations'][injection.INJECTED]}, "
                f"OTEL_SERVICE_NAME={env.get('OTEL_SERVICE_NAME')}, {agent or 'no agent'}"
            )

    def running_pods(self, selector: str, count: int) -> list[dict[str, Any]] | None:
        found = [
            p
            for p in self.pods(selector)
            if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        ]
        return found if len(found) >= count else None

    def find_application_trace(self, service: str) -> Any:
        """Poll Jaeger for a trace rooted in the application ``service``'s span holding the
        coordinator's and replicas' spans (:func:`text.application_trace`). A JVM with its
        agent may take a minute to start on a busy machine: the bound is longer there."""
        from kvtrace.shared.jaeger_client import JaegerClient

        https = self.jaeger_url.startswith("https://") and self.collector_ca
        client = JaegerClient(
            self.jaeger_url,
            timeout=30,
            ca_pem=Path(self.collector_ca).read_text() if https else None,
        )
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)

        def found() -> Any:
            if service not in client.services():
                return None
            return text.application_trace(
                client.find_traces(service, start=since, limit=50), service, self.service
            )

        trace = self.wait_for(
            found,
            self.options.trace_timeout + APP_START_SLACK,
            f"trace of {service!r} through {self.service!r}'s coordinator and replicas in Jaeger",
            interval=1.0,
        )
        self.say(
            f"    application {service}: trace {trace.trace_id}, {len(trace.spans)} spans, services "
            f"{', '.join(sorted(trace.services))}"
        )
        return client.trace(trace.trace_id) or trace

    def write_state(self) -> None:
        """Record what runs for `kvtrace dev env` (the format of `kvtrace dev up`)."""
        if self.state_path is None:
            return
        state = {
            "pid": os.getpid(),
            "kubeconfig": str(self.cluster.kubeconfig),
            "server": self.cluster.server,
            "namespace": self.options.namespace,
            "jaeger_url": self.jaeger_url,
            "otlp_http": self.collector_http,
            "otlp_certificate": self.collector_ca,
            "endpoint_map": str(self.endpoint_map.path),
            "kv_ca_file": self.kv_ca,
            "kv_token_file": self.kv_token,
            "prometheus_url": self.metrics.url if self.metrics else "",
            "workdirs": [str(self.cluster.workdir)],
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(state, indent=2))

    def load(self) -> dict[str, Any]:
        opts = self.options
        urls = [
            f"{self.kv_scheme}://{address}:{CLIENT_PORT}"
            for _, address in sorted(self.kv_runner.pods().items())
        ]
        secured = [
            *(["--ca-file", self.kv_ca] if self.kv_ca else []),
            *(["--token-file", self.kv_token] if self.kv_token else []),
        ]
        argv = [
            str(Path(sys.executable).parent / "kvtrace"),
            "bench",
            "--json-only",
            "--ops",
            str(opts.ops),
            "--duration",
            f"{opts.duration:g}",
            "--clients",
            str(opts.clients),
            "--keys",
            "1000",
            "--key-prefix",
            "demo/",
            *secured,
            *[arg for url in urls for arg in ("--endpoint", url)],
        ]
        self.say("    $ " + " ".join(argv[1:]))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=opts.duration + 120)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise DemoError(
                f"kvtrace bench exited {proc.returncode} without a result: {proc.stderr.strip()[-2000:]}"
            )
        result: dict[str, Any] = json.loads(lines[-1])
        self.say("    " + text.load_summary(result).splitlines()[0])
        problems = text.load_problems(result)
        if problems:
            raise DemoError("; ".join(problems))
        return result

    def find_traces(self, sent: int) -> tuple[text.TraceStats, Any]:
        """Poll Jaeger until a trace with spans from more than one member is in and the count
        settled (:func:`text.traces_settled`); the stats and the trace to draw."""
        from kvtrace.shared.jaeger_client import JaegerClient

        https = self.jaeger_url.startswith("https://") and self.collector_ca
        client = JaegerClient(
            self.jaeger_url,
            timeout=30,
            ca_pem=Path(self.collector_ca).read_text() if https else None,
        )
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
        seen: list[tuple[float, tuple[int, int]]] = []

        def fetch() -> list[Any]:
            if self.service not in client.services():
                return []
            return client.find_traces(self.service, start=since, limit=sent + 100)

        deadline = time.monotonic() + self.options.trace_timeout
        while True:
            traces = fetch()
            stats = text.trace_stats(traces)
            seen.append((time.monotonic(), (stats.count, stats.spans)))
            if (
                text.traces_settled(seen) and not text.trace_problems(stats)
            ) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        self.say("    " + text.traces_summary(stats, sent).splitlines()[0])
        problems = text.trace_problems(stats)
        if problems:
            raise DemoError("; ".join(problems) + f" within {self.options.trace_timeout:g}s")
        chosen = text.pick_trace(traces)
        assert chosen is not None
        return stats, client.trace(chosen.trace_id) or chosen  # with every span that arrived since

    def exports(self) -> dict[str, str]:
        exports = {
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "KVTRACE_JAEGER_URL": self.jaeger_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.collector_http,
            "KVTRACE_ENDPOINT_MAP": str(self.endpoint_map.path),
        }
        exports.update(kv_exports(self.kv_ca, self.kv_token))
        if self.metrics is not None and self.metrics.url:  # `kvtrace top` reads it
            exports[PROMETHEUS_ENV] = self.metrics.url
        if self.collector_ca:  # TLS: the collector's certificate names this address (pod runner)
            exports["OTEL_EXPORTER_OTLP_CERTIFICATE"] = self.collector_ca
            if self.jaeger_url.startswith(
                "https://"
            ):  # kvtrace trace/traces read it (Jaeger's query port)
                exports[CA_FILE_ENV] = self.collector_ca
        return exports


BACKEND_PROGRAMS = ("otelcol-kvtrace", "jaeger")


@functools.cache
def cached_program(name: str) -> str:
    """A cached tool's path, checksummed once per process (`tools.binary` verifies on every
    call, and the pod runners render their pods, hence ask, every 0.3 s)."""
    from kvtrace.devstack import tools

    return str(tools.binary(name))


class StepFailed(Exception):
    def __init__(self, step: str, problem: str) -> None:
        super().__init__(f"{step}: {problem}")
        self.step = step
        self.problem = problem


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _status_of(url: str, context: Any = None) -> int:
    import urllib.error

    from kvtrace.devstack.proc import urlopen_direct

    try:
        with urlopen_direct(url, timeout=2, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def kv_exports(ca_file: str, token_file: str) -> dict[str, str]:
    """What `kvtrace kv` and `kvtrace bench` read to reach the demo's KV members (TLS and
    tokens are on by default; the pod runner's leaves name the members' local addresses)."""
    exports = {"KVTRACE_KV_CA_FILE": ca_file} if ca_file else {}
    if token_file:
        exports["KVTRACE_KV_TOKEN_FILE"] = token_file
    return exports
