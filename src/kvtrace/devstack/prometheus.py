"""Prometheus as a local process (``prometheus`` from the tool cache), configured by the
operator's rendered ``prometheus.yml`` and alert rules (render/metrics.py) with the pods'
service discovery replaced by loopback targets.

    with Prometheus(config, rules, targets={"kvtrace-kvnode": {"127.0.0.5:7070": {"pod": "orders-0"}}}) as prom:
        prom.query('sum(traces_span_metrics_calls_total)')

Development harness only: product code never imports it.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kvtrace.devstack import tools
from kvtrace.devstack.proc import (
    Process,
    free_port,
    keep_workdirs,
    start_with_port_retry,
    urlopen_direct,
)

HOST = "127.0.0.1"
OTLP_METRICS_PATH = "/api/v1/otlp/v1/metrics"


# Rendered flags a local Prometheus keeps (retention, features); it sets config, data path and
# listening address itself.
KEPT_FLAGS = ("--storage.tsdb.retention.", "--enable-feature=")


def kept_flags(args: Sequence[str]) -> list[str]:
    """The rendered Prometheus container's ``args`` that the local process keeps."""
    return [arg for arg in args if arg.startswith(KEPT_FLAGS)]


Targets = Mapping[
    str, Mapping[str, Mapping[str, str]]
]  # job -> {host:port: the labels the pod's would get}
JobSettings = Mapping[str, Mapping[str, Any]]  # job -> scrape settings, e.g. scheme, tls_config


def loopback_prometheus_config(
    config: Mapping[str, Any],
    targets: Targets,
    rules_file: Path | None,
    job_settings: JobSettings | None = None,
) -> dict[str, Any]:
    """A copy of a rendered Prometheus config whose jobs scrape ``targets[job]`` (``host:port``
    with the labels relabelling gives a pod: ``pod``, ``namespace``, ``instance_of``; a job
    without targets is dropped) instead of discovering pods, and whose rule file is
    ``rules_file``. ``job_settings[job]`` is merged into that job (how the local process
    reaches its targets: ``scheme: https`` and the CA of KV members serving TLS). Everything
    else (intervals, metrics paths, external labels) is kept."""
    result = copy.deepcopy(dict(config))
    jobs = []
    for job in result.get("scrape_configs") or []:
        addresses = targets.get(job["job_name"]) or {}
        if not addresses:
            continue
        job.pop("kubernetes_sd_configs", None)
        job.pop("relabel_configs", None)
        job.update(copy.deepcopy(dict((job_settings or {}).get(job["job_name"]) or {})))
        job["static_configs"] = [
            {"targets": [address], "labels": dict(labels)}
            for address, labels in sorted(addresses.items())
        ]
        jobs.append(job)
    result["scrape_configs"] = jobs
    result["rule_files"] = [str(rules_file)] if rules_file else []
    return result


class Prometheus:
    """``prometheus`` with a config dict (and rule groups), on a free loopback port (or
    ``listen``, ``host:port``: a pod's own loopback address and port); its TSDB in a
    temporary directory. ``args`` are extra flags (the rendered retention flags);
    ``job_settings`` see :func:`loopback_prometheus_config`."""

    def __init__(
        self,
        config: Mapping[str, Any],
        rules: Mapping[str, Any] | None = None,
        *,
        targets: Targets | None = None,
        job_settings: JobSettings | None = None,
        workdir: Path | None = None,
        args: Sequence[str] = (),
        name: str = "prometheus",
        listen: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.source_config, self.rules = config, rules
        self.targets = dict(targets or {})
        self.job_settings = dict(job_settings or {})
        self.listen = listen
        self.args, self.name, self.startup_timeout = list(args), name, startup_timeout
        self._given_workdir = workdir
        self.workdir = Path()
        self.address = ""
        self.process: Process | None = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def otlp_metrics_url(self) -> str:
        """Where a collector pushes OTLP metrics (``--web.enable-otlp-receiver``)."""
        return self.url + OTLP_METRICS_PATH

    def start(self) -> Prometheus:
        binary = tools.binary("prometheus")
        self.workdir = self._given_workdir or Path(tempfile.mkdtemp(prefix="kvtrace-prometheus-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_file = self._write_config()

        def make() -> Process:
            self.address = self.listen or f"{HOST}:{free_port()}"
            argv = [
                str(binary),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}",
                "--web.enable-otlp-receiver",
                "--web.enable-lifecycle",
                *self.args,
            ]
            return Process(self.name, argv, self.workdir / f"{self.name}.log")

        try:
            self.process = start_with_port_retry(
                make, lambda proc: self.ready(), timeout=self.startup_timeout, what="ready"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config(self) -> Path:
        rules_file = self.workdir / "rules.yml" if self.rules is not None else None
        if rules_file is not None:
            rules_file.write_text(yaml.safe_dump(dict(self.rules or {}), sort_keys=False))
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(
            yaml.safe_dump(
                loopback_prometheus_config(
                    self.source_config, self.targets, rules_file, self.job_settings
                ),
                sort_keys=False,
            )
        )
        return config_file

    def set_targets(self, targets: Targets, job_settings: JobSettings | None = None) -> None:
        """Scrape ``targets`` from now on (the config is rewritten and reloaded); with
        ``job_settings``, those replace the jobs' settings."""
        self.targets = dict(targets)
        if job_settings is not None:
            self.job_settings = dict(job_settings)
        self._write_config()
        request = urllib.request.Request(self.url + "/-/reload", method="POST")  # noqa: S310 - loopback http
        with urlopen_direct(request, timeout=30) as resp:
            if int(resp.status) != 200:
                raise RuntimeError(f"Prometheus reload answered {resp.status}")

    def ready(self) -> bool:
        try:
            with urlopen_direct(self.url + "/-/ready", timeout=2) as resp:
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._given_workdir is None and self.workdir != Path() and not keep_workdirs():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        return self.process.tail(lines) if self.process else ""

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/PATH?params``'s ``data`` (raises on an error status)."""
        query = urllib.parse.urlencode(params)
        with urlopen_direct(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of a query that returns one sample (None when it returns none)."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) != 1:
            raise AssertionError(f"{expr} returned {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts currently pending or firing (``/api/v1/alerts``)."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts
