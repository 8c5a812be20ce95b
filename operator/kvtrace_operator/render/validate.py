"""Checks the schema cannot express, and the schema's own rules again for ``kvtrace render``
(files never went through the API server). Every SpecError names the field path.

The shape of a spec (types, unknown fields, the CEL rules) is checked in one place, against the
CRD itself: by the API server for the operator, by ``render.strict`` for ``kvtrace render``
before anything renders. What reaches this module has that shape."""

from __future__ import annotations

import re
from typing import Any

from kvtrace_operator.render import (
    consumer_tokens,
    environment,
    kvsecurity,
    query_access,
    sampling,
    tls,
)
from kvtrace_operator.render.errors import SpecError
from kvtrace_operator.spec import KVClusterSpec, PipelineSpec, parse_kvcluster, parse_pipeline
from kvtrace_operator.spec.common import SecretKeyRef
from kvtrace_operator.spec.durations import Duration, parse_duration
from kvtrace_operator.spec.pipeline import OTLPExporter

# StatefulSet pods get a controller-revision-hash label "NAME-<10 chars>" (<= 63).
MAX_KVCLUSTER_NAME = 52
MAX_PIPELINE_NAME = 40  # "-collector-sampling" and friends must still fit in 63
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_BUFFER_AGE_NS = 60 * 10**9  # spec.sampling.retroactive.bufferAge, as the CRD says
# The same minimums as the CRDs' CEL rules (a unit test compares them).
MIN_DURATIONS = {
    "spec.antiEntropy.interval": "1s",
    "spec.sampling.latencyThreshold": "1ms",
    "spec.sampling.decisionWait": "1s",
    "spec.sampling.retroactive.bufferAge": "100ms",
    "spec.collector.resourceDetection.timeout": "100ms",
    "spec.jaeger.storage.retention": "1m",
    "spec.jaeger.archive.retention": "1m",
    "spec.metrics.prometheus.retention": "1h",
    "spec.metrics.prometheus.scrapeInterval": "1s",
    **{
        f"spec.security.tls.{field}": "1s"
        for field in ("duration", "renewBefore", "caDuration", "caRenewBefore")
    },
}


def _duration(duration: Duration) -> None:
    parse_duration(duration.text, duration.field, MIN_DURATIONS.get(duration.field))


def _name(resource: dict[str, Any], limit: int) -> None:
    name = resource.get("metadata", {}).get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > limit:
        raise SpecError(
            "metadata.name",
            f"expected a DNS label (lower-case letters, digits, '-', "
            f"starting with a letter) of at most {limit} characters, got {name!r}",
        )


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(field, f"expected an integer from {low} to {high}, got {value!r}")
    return value


def _enum(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(field, f"expected one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def validate_kvcluster(cluster: dict[str, Any]) -> KVClusterSpec:
    """The cluster's typed spec once every check passed; SpecError naming the field else."""
    _name(cluster, MAX_KVCLUSTER_NAME)
    spec = parse_kvcluster(cluster.get("spec"))
    replicas = _integer(spec.replicas, "spec.replicas", 1, 100)
    factor = _integer(spec.replication_factor, "spec.replicationFactor", 1, 7)
    if factor > replicas:
        raise SpecError(
            "spec.replicationFactor",
            f"must be at most spec.replicas ({replicas}): "
            f"each key needs {factor} distinct members, got {factor}",
        )
    _duration(spec.anti_entropy_interval)
    kvsecurity.validate(spec)
    return spec


def _validate_sampling(spec: PipelineSpec) -> None:
    values = spec.sampling
    if not 0 <= values.ratio <= 1:
        raise SpecError(
            "spec.sampling.ratio", f"expected a number from 0 to 1, got {values.ratio!r}"
        )
    if values.mode == sampling.HEAD and values.keep_errors is True:
        raise SpecError(
            "spec.sampling.keepErrors",
            "head sampling decides at the root span, before "
            "any error happens, so it cannot keep every error: use mode production "
            "(tail sampling) or leave keepErrors unset/false",
        )
    _duration(values.latency_threshold)
    _duration(values.decision_wait)
    if sampling.uses_tail_sampling(spec):
        _decision_wait(spec)
    _validate_retroactive(spec)


def _validate_retroactive(spec: PipelineSpec) -> None:
    """The nodes' buffer bounds (the same as the CRD's and `kvtrace node serve`'s); in
    retroactive mode the buffer must hold a trace past the latency threshold."""
    values = spec.sampling
    age = values.buffer_age
    _integer(values.buffer_bytes, "spec.sampling.retroactive.bufferBytes", 1 << 20, 1 << 30)
    _duration(age)
    if age.nanos > MAX_BUFFER_AGE_NS:
        raise SpecError(age.field, f"expected at most 60s, got {age.text!r}")
    if values.mode != sampling.RETROACTIVE:
        return
    if values.keep_errors is False:
        raise SpecError(
            "spec.sampling.keepErrors",
            "retroactive mode always keeps every failed operation's trace: leave keepErrors "
            "unset/true, or use mode head to sample errors at ratio",
        )
    if age.nanos <= values.latency_threshold.nanos:
        raise SpecError(
            age.field,
            f"expected more than spec.sampling.latencyThreshold ({values.latency_threshold}), "
            f"got {age.text!r}: a replica's spans of an operation just over the "
            "threshold would expire before its coordinator keeps them",
        )


def _decision_wait(spec: PipelineSpec) -> None:
    """Tail sampling judges whole traces only if decisionWait leaves room for a slow trace to
    end and reach the sampler (sampling.min_decision_wait_ns explains the bound)."""
    wait = spec.sampling.decision_wait
    minimum = sampling.min_decision_wait_ns(spec)
    if wait.nanos < minimum:
        raise SpecError(
            wait.field,
            (
                f"expected at least 2 x (spec.sampling.latencyThreshold + spec.collector.batch.timeout) = "
                f"{minimum / 1e9:g}s with tail sampling, got {wait.text!r}: the "
                f"sampler would decide before a trace just over the latency threshold has reached it"
            ),
        )


def _validate_destinations(spec: PipelineSpec) -> None:
    exporters = spec.exporters.otlp
    seen: set[str] = set()
    for index, exporter in enumerate(exporters):
        field = f"spec.exporters.otlp[{index}]"
        if not _DNS_LABEL.match(exporter.name):
            raise SpecError(f"{field}.name", f"expected a lower-case name, got {exporter.name!r}")
        if exporter.name in seen:
            raise SpecError(f"{field}.name", f"duplicate exporter name {exporter.name!r}")
        seen.add(exporter.name)
        if not exporter.endpoint:
            raise SpecError(f"{field}.endpoint", "expected the OTLP endpoint (host:port or URL)")
        _enum(exporter.protocol, f"{field}.protocol", ("grpc", "http"))
        _validate_secret_refs(exporter, field)
    if not (spec.jaeger.enabled or exporters or sampling.debug_exporter_on(spec)):
        raise SpecError(
            "spec.exporters",
            "traces have nowhere to go: enable spec.jaeger, add "
            "spec.exporters.otlp or enable spec.exporters.debug",
        )


def _secret_ref(ref: SecretKeyRef | None, field: str) -> None:
    if ref is None or not (ref.name and ref.key):
        shown = None if ref is None else ref.as_dict()
        raise SpecError(field, f"expected {{name: SECRET, key: KEY}}, got {shown!r}")


def _validate_secret_refs(exporter: OTLPExporter, field: str) -> None:
    if exporter.ca_secret is not None:
        _secret_ref(exporter.ca_secret, f"{field}.tls.caSecret")
    seen: set[str] = set()
    for index, header in enumerate(exporter.secret_headers):
        where = f"{field}.secretHeaders[{index}]"
        if not re.fullmatch(r"[A-Za-z0-9-]+", header.name):
            raise SpecError(f"{where}.name", f"expected a header name, got {header.name!r}")
        if header.name.lower() in seen:
            raise SpecError(f"{where}.name", f"duplicate header {header.name!r}")
        seen.add(header.name.lower())
        _secret_ref(header.secret_key_ref, f"{where}.secretKeyRef")


def _validate_jaeger(spec: PipelineSpec) -> None:
    jaeger = spec.jaeger
    storage = jaeger.storage
    _enum(storage.type, "spec.jaeger.storage.type", ("memory", "badger"))
    _integer(storage.max_traces, "spec.jaeger.storage.maxTraces", 1, 10_000_000)
    _duration(storage.retention)
    _validate_archive(spec)
    if jaeger.tenancy.enabled and not jaeger.tenancy.tenants:
        raise SpecError(
            "spec.jaeger.tenancy.tenants", "expected at least one tenant when tenancy is enabled"
        )
    query_access.validate(spec)
    if (ref := jaeger.query_auth.credentials_secret_ref) is not None:
        _secret_ref(ref, f"{query_access.FIELD}.credentialsSecretRef")


def _validate_archive(spec: PipelineSpec) -> None:
    archive, storage = spec.jaeger.archive, spec.jaeger.storage
    _integer(archive.max_traces, "spec.jaeger.archive.maxTraces", 1, 10_000_000)
    _duration(archive.retention)
    if not archive.enabled or storage.type != "badger":
        return
    if archive.retention.nanos <= storage.retention.nanos:
        raise SpecError(
            archive.retention.field,
            f"expected a duration longer than spec.jaeger.storage.retention "
            f"({storage.retention}) with badger storage: the archive keeps what the primary "
            f"store lets expire, got {archive.retention.text!r}",
        )


_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")


def _validate_metrics(spec: PipelineSpec) -> None:
    prometheus = spec.metrics.prometheus
    _duration(prometheus.retention)
    _duration(prometheus.scrape_interval)
    external = spec.metrics.external
    if external is None:
        return
    if not spec.metrics.enabled:
        raise SpecError(
            "spec.metrics.external",
            "external needs enabled: true (the span metrics are what is sent there)",
        )
    for key, value in (("url", external.url), ("otlpEndpoint", external.otlp_endpoint)):
        if (value is not None or key == "url") and not (value and _URL.match(value)):
            raise SpecError(
                f"spec.metrics.external.{key}",
                f"expected an http(s) URL such as http://prometheus.monitoring:9090, got {value!r}",
            )


def _validate_security(spec: PipelineSpec) -> None:
    auth = spec.security.auth
    if auth.enabled and auth.token_secret_ref is not None:  # None: the operator makes one
        _secret_ref(auth.token_secret_ref, "spec.security.auth.tokenSecretRef")
    consumer_tokens.validate(auth.consumers)
    tls.validate(spec.security.tls)


def validate_pipeline(pipeline: dict[str, Any]) -> PipelineSpec:
    """The pipeline's typed spec once every check passed; SpecError naming the field else."""
    _name(pipeline, MAX_PIPELINE_NAME)
    spec = parse_pipeline(pipeline.get("spec"))
    _validate_sampling(spec)
    _integer(spec.collector.replicas, "spec.collector.replicas", 1, 20)
    _duration(spec.collector.detection_timeout)
    environment.environment(pipeline, spec)
    _validate_jaeger(spec)
    _validate_destinations(spec)
    _validate_metrics(spec)
    _enum(spec.query_access, "spec.networkPolicy.queryAccess", ("namespace", "labelled"))
    _validate_security(spec)
    if (
        "kvstore.key" not in spec.redaction.hash_attributes
        and spec.sampling.mode != sampling.DEVELOPMENT
    ):
        raise SpecError(
            "spec.redaction.hashAttributes",
            "must contain kvstore.key: raw keys are "
            "kept only by a development pipeline that asks for it explicitly",
        )
    return spec
