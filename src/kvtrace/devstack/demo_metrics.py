"""The pipeline's metrics store in `kvtrace dev demo` (``spec.metrics``, on by default): the
Prometheus the operator renders, run as a local process standing in for its pod.

The operator renders a Deployment, a ConfigMap (``prometheus.yml``, ``rules.yml``) and a
Service ``NAME-prometheus``. :class:`MetricsStore` runs ``prometheus`` from the tool cache
with exactly that config and those rules and the rendered retention flags, on the pod's own
loopback address and the rendered port, and maps the Service's and the pod's names to it in
the endpoint map BEFORE the collector and Jaeger start: their rendered configs (the
collector's ``otlp_http/metrics`` exporter, Jaeger's metric backend for the Monitor tab) reach
it unchanged. Only the pod discovery is replaced: the pod runners know where the collector,
Jaeger and KV processes listen, and :func:`scrape_targets` makes those static targets with the
labels relabelling gives a pod (:mod:`kvtrace.devstack.prometheus`). KV members serve TLS by
default: their job then verifies them with the KVCluster's CA bundle (:func:`kv_job_settings`).

Development harness only: product code never imports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kvtrace.devstack.demo_summary import DemoError
from kvtrace.devstack.podnames import endpoint_entries
from kvtrace.devstack.prometheus import JobSettings, Prometheus, Targets, kept_flags
from kvtrace_operator.render import names
from kvtrace_operator.render.labels import (
    COLLECTOR,
    COLLECTOR_LOADBALANCER,
    COLLECTOR_SAMPLING,
    JAEGER,
    PROMETHEUS,
)
from kvtrace_operator.render.metrics import CONFIG_FILE, JOB_COLLECTOR, JOB_JAEGER, JOB_KVNODE
from kvtrace_operator.render.metrics import RULES_FILE as PROMETHEUS_RULES_FILE

OWNER = "metrics-store"  # its entries in the endpoint map
COLLECTORS = (COLLECTOR, COLLECTOR_SAMPLING, COLLECTOR_LOADBALANCER)
Get = Callable[..., dict[str, Any]]  # get(kind, name) or get("pods", selector=...) -> object(s)


def rendered_flags(deployment: Mapping[str, Any]) -> list[str]:
    """The rendered Prometheus container's flags that the local process keeps."""
    return kept_flags(deployment["spec"]["template"]["spec"]["containers"][0].get("args") or [])


def scrape_targets(
    namespace: str,
    pipeline: str,
    backends: Mapping[str, Mapping[str, str]],
    cluster: str,
    kv_pods: Mapping[str, str],
) -> Targets:
    """The jobs' targets: ``backends`` is component -> {pod: loopback address} of the
    pipeline's collector(s) and Jaeger, ``kv_pods`` {pod: address} of the KVCluster's members."""
    own = {"namespace": namespace, "instance_of": pipeline}
    collectors = {pod: a for c in COLLECTORS for pod, a in (backends.get(c) or {}).items()}
    return {
        JOB_COLLECTOR: {
            f"{address}:{names.COLLECTOR_METRICS_PORT}": {**own, "pod": pod}
            for pod, address in sorted(collectors.items())
        },
        JOB_JAEGER: {
            f"{address}:{names.JAEGER_METRICS_PORT}": {**own, "pod": pod}
            for pod, address in sorted((backends.get(JAEGER) or {}).items())
        },
        JOB_KVNODE: {
            f"{address}:{names.CLIENT_PORT}": {
                "namespace": namespace,
                "instance_of": cluster,
                "pod": pod,
            }
            for pod, address in sorted(kv_pods.items())
        },
    }


def kv_job_settings(ca_file: str) -> JobSettings:
    """KV members serving TLS (the default) are scraped over https, verified with their CA."""
    if not ca_file:
        return {}
    return {JOB_KVNODE: {"scheme": "https", "tls_config": {"ca_file": ca_file}}}


class MetricsStore:
    """The pipeline's rendered Prometheus as a local process (see the module docstring)."""

    def __init__(
        self,
        get: Get,
        namespace: str,
        pipeline: str,
        endpoint_map: Any,
        workdir: Path,
        allocate: Callable[[str], str],
    ) -> None:
        self.get, self.namespace, self.pipeline = get, namespace, pipeline
        self.endpoint_map, self.workdir, self.allocate = endpoint_map, workdir, allocate
        self.prometheus: Prometheus | None = None

    @property
    def url(self) -> str:
        return self.prometheus.url if self.prometheus else ""

    def start(self) -> str:
        """Start it from the rendered objects; what it runs, for the demo's output."""
        import yaml

        name = names.prometheus(self.pipeline)
        files = self.get("configmap", name).get("data") or {}
        if CONFIG_FILE not in files or PROMETHEUS_RULES_FILE not in files:
            raise DemoError(f"ConfigMap {name}: no {CONFIG_FILE} and {PROMETHEUS_RULES_FILE}")
        pods = self.get(
            "pods",
            selector=f"app.kubernetes.io/instance={self.pipeline},"
            f"app.kubernetes.io/component={PROMETHEUS}",
        )["items"]
        if len(pods) != 1:
            raise DemoError(f"expected one pod of Deployment {name}, found {len(pods)}")
        pod = pods[0]
        address = self.allocate(pod["metadata"]["name"])
        self.prometheus = Prometheus(
            yaml.safe_load(files[CONFIG_FILE]),
            yaml.safe_load(files[PROMETHEUS_RULES_FILE]),
            workdir=self.workdir,
            args=rendered_flags(self.get("deployment", name)),
            listen=f"{address}:{names.PROMETHEUS_PORT}",
        ).start()
        self.endpoint_map.update(
            OWNER,
            endpoint_entries(
                self.namespace, [pod], [self.get("service", name)], lambda _pod: address
            ),
        )
        process = self.prometheus.process
        assert process is not None
        return (
            f"{pod['metadata']['name']}/prometheus on {self.prometheus.address}: pid "
            f"{process.pid}, log {process.log_path} (ConfigMap {name}: {CONFIG_FILE}, "
            f"{PROMETHEUS_RULES_FILE})"
        )

    def scrape(self, targets: Targets, job_settings: JobSettings) -> None:
        assert self.prometheus is not None
        self.prometheus.set_targets(targets, job_settings)

    def red_summary(self, since: float, timeout: float) -> str:
        """``kvtrace top``'s table over the time since ``since`` (a monotonic time before the
        load), once the span metrics show KV operations (the connector flushes every 15 s)."""
        from kvtrace.inspect.top import fetch, prometheus_query, render_table

        query = prometheus_query(self.url)
        deadline = time.monotonic() + timeout
        while True:
            window = f"{int(time.monotonic() - since) + 15}s"
            report = fetch(query, window)
            if any(row["rate"] > 0 for row in report["operations"]):
                return render_table(report, window)
            if time.monotonic() > deadline:
                raise DemoError(
                    f"no KV operations in the span metrics of {self.url} within {timeout:g}s"
                )
            time.sleep(2.0)

    def stop(self) -> None:
        self.endpoint_map.remove(OWNER)
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
