"""The typed spec of a TracingPipeline: ``parse_pipeline`` applies the CRD's defaults once
(``spec.defaults``) and reads every field into frozen dataclasses. Builders read fields of
``PipelineSpec``; nobody below re-defaults. Imports nothing of the operator above ``spec``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvtrace_operator.spec.common import TLS, SecretKeyRef, TokenHolder
from kvtrace_operator.spec.defaults import apply_defaults_pipeline
from kvtrace_operator.spec.durations import Duration
from kvtrace_operator.spec.errors import SpecError
from kvtrace_operator.spec.fields import Fields
from kvtrace_operator.spec.quantities import Quantity

SAMPLING_MODES = ("production", "development", "head", "retroactive")
QUERY_AUTH_MODES = ("none", "basic", "bearer", "oidc")


@dataclass(frozen=True)
class Sampling:
    """``keep_errors`` None: unset (tail sampling keeps errors)."""

    mode: str
    ratio: float
    latency_threshold: Duration
    keep_errors: bool | None
    decision_wait: Duration
    num_traces: int
    buffer_bytes: int  # sampling.retroactive.bufferBytes
    buffer_age: Duration  # sampling.retroactive.bufferAge


@dataclass(frozen=True)
class AttributeFrom:
    """A label or annotation the k8sattributes processor copies (``kubernetesAttributes``)."""

    key: str
    tag_name: str
    source: str | None  # "from"


@dataclass(frozen=True)
class KubernetesAttributes:
    enabled: bool
    scope: str
    metadata: tuple[str, ...]
    labels: tuple[AttributeFrom, ...]
    annotations: tuple[AttributeFrom, ...]


@dataclass(frozen=True)
class Collector:
    replicas: int
    image: str | None
    resources: dict[str, Any] | None
    send_batch_size: int  # batch.sendBatchSize
    batch_timeout: Duration  # batch.timeout
    check_interval: Duration  # memoryLimiter.checkInterval
    limit_percentage: int  # memoryLimiter.limitPercentage
    spike_limit_percentage: int  # memoryLimiter.spikeLimitPercentage
    detectors: tuple[str, ...]  # resourceDetection.detectors
    detection_override: bool  # resourceDetection.override
    detection_timeout: Duration  # resourceDetection.timeout
    kubernetes_attributes: KubernetesAttributes


@dataclass(frozen=True)
class JaegerStorage:
    type: str
    max_traces: int
    retention: Duration
    size: Quantity
    storage_class_name: str | None


@dataclass(frozen=True)
class Archive:
    enabled: bool
    max_traces: int
    retention: Duration


@dataclass(frozen=True)
class Tenancy:
    enabled: bool
    header: str
    tenants: tuple[str, ...]


@dataclass(frozen=True)
class OIDCAuth:
    issuer: str
    audience: str
    required_claim: tuple[str, str] | None  # (name, value)
    ca_secret_ref: SecretKeyRef | None


@dataclass(frozen=True)
class QueryAuth:
    """``jaeger.query.auth``."""

    mode: str
    credentials_secret_ref: SecretKeyRef | None
    oidc: OIDCAuth | None
    proxy_image: str | None


@dataclass(frozen=True)
class Jaeger:
    enabled: bool
    image: str | None
    resources: dict[str, Any] | None
    storage: JaegerStorage
    archive: Archive
    tenancy: Tenancy
    query_auth: QueryAuth


@dataclass(frozen=True)
class SecretHeader:
    name: str
    secret_key_ref: SecretKeyRef | None  # required: render.validate says so


@dataclass(frozen=True)
class OTLPExporter:
    """One ``exporters.otlp[]`` entry: a destination beside (or instead of) Jaeger."""

    name: str
    endpoint: str
    protocol: str
    headers: dict[str, str] | None
    compression: str | None
    insecure: bool  # tls.insecure
    insecure_skip_verify: bool  # tls.insecureSkipVerify
    ca_secret: SecretKeyRef | None  # tls.caSecret
    secret_headers: tuple[SecretHeader, ...]


@dataclass(frozen=True)
class Exporters:
    otlp: tuple[OTLPExporter, ...]
    debug_enabled: bool
    debug_verbosity: str


@dataclass(frozen=True)
class Redaction:
    hash_attributes: tuple[str, ...]
    default_patterns: bool
    blocked_key_patterns: tuple[str, ...]
    blocked_values: tuple[str, ...]


@dataclass(frozen=True)
class Prometheus:
    image: str | None
    retention: Duration
    storage_size: Quantity
    scrape_interval: Duration
    resources: dict[str, Any] | None


@dataclass(frozen=True)
class ExternalMetrics:
    url: str
    otlp_endpoint: str | None


@dataclass(frozen=True)
class Metrics:
    """``external`` set: an existing Prometheus instead of the operator's own."""

    enabled: bool
    prometheus: Prometheus
    external: ExternalMetrics | None

    @property
    def deploys_prometheus(self) -> bool:
        """The operator deploys the pipeline's own Prometheus (metrics on, no external one)."""
        return self.enabled and not (self.external is not None and self.external.url)


@dataclass(frozen=True)
class PipelineAuth:
    enabled: bool
    consumers: tuple[TokenHolder, ...]
    token_secret_ref: SecretKeyRef | None


@dataclass(frozen=True)
class PipelineSecurity:
    auth: PipelineAuth
    tls: TLS


@dataclass(frozen=True)
class PipelineSpec:
    """A TracingPipeline's spec with every default applied."""

    sampling: Sampling
    collector: Collector
    jaeger: Jaeger
    exporters: Exporters
    zipkin_receiver: bool  # receivers.zipkin.enabled
    jaeger_receiver: bool  # receivers.jaeger.enabled
    redaction: Redaction
    metrics: Metrics
    network_policy_enabled: bool
    query_access: str  # networkPolicy.queryAccess
    security: PipelineSecurity


def _sampling(fields: Fields) -> Sampling:
    retroactive = fields.obj("retroactive")
    return Sampling(
        mode=fields.enum("mode", SAMPLING_MODES),
        ratio=fields.number("ratio"),
        latency_threshold=fields.duration("latencyThreshold"),
        keep_errors=fields.opt_boolean("keepErrors"),
        decision_wait=fields.duration("decisionWait"),
        num_traces=fields.integer("numTraces"),
        buffer_bytes=retroactive.integer("bufferBytes"),
        buffer_age=retroactive.duration("bufferAge"),
    )


def _attributes_from(fields: Fields, name: str) -> tuple[AttributeFrom, ...]:
    return tuple(
        AttributeFrom(item.text("key"), item.text("tagName"), item.opt_string("from"))
        for item in fields.items(name)
    )


def _collector(fields: Fields) -> Collector:
    batch, limiter = fields.obj("batch"), fields.obj("memoryLimiter")
    detection, attributes = fields.obj("resourceDetection"), fields.obj("kubernetesAttributes")
    return Collector(
        replicas=fields.integer("replicas"),
        image=fields.opt_string("image"),
        resources=fields.kubernetes("resources"),
        send_batch_size=batch.integer("sendBatchSize"),
        batch_timeout=batch.duration("timeout"),
        check_interval=limiter.duration("checkInterval"),
        limit_percentage=limiter.integer("limitPercentage"),
        spike_limit_percentage=limiter.integer("spikeLimitPercentage"),
        detectors=detection.strings("detectors"),
        detection_override=detection.boolean("override"),
        detection_timeout=detection.duration("timeout"),
        kubernetes_attributes=KubernetesAttributes(
            enabled=attributes.boolean("enabled"),
            scope=attributes.string("scope"),
            metadata=attributes.strings("metadata"),
            labels=_attributes_from(attributes, "labels"),
            annotations=_attributes_from(attributes, "annotations"),
        ),
    )


def _query_auth(fields: Fields) -> QueryAuth:
    oidc = fields.opt_obj("oidc")
    claim = oidc.opt_obj("requiredClaim") if oidc is not None else None
    return QueryAuth(
        mode=fields.enum("mode", QUERY_AUTH_MODES),
        credentials_secret_ref=SecretKeyRef.read(fields.opt_obj("credentialsSecretRef")),
        oidc=None
        if oidc is None
        else OIDCAuth(
            issuer=oidc.text("issuer"),
            audience=oidc.text("audience"),
            required_claim=None if claim is None else (claim.text("name"), claim.text("value")),
            ca_secret_ref=SecretKeyRef.read(oidc.opt_obj("caSecretRef")),
        ),
        proxy_image=fields.opt_string("proxyImage"),
    )


def _jaeger(fields: Fields) -> Jaeger:
    storage, archive, tenancy = fields.obj("storage"), fields.obj("archive"), fields.obj("tenancy")
    return Jaeger(
        enabled=fields.boolean("enabled"),
        image=fields.opt_string("image"),
        resources=fields.kubernetes("resources"),
        storage=JaegerStorage(
            type=storage.string("type"),
            max_traces=storage.integer("maxTraces"),
            retention=storage.duration("retention"),
            size=storage.quantity("size"),
            storage_class_name=storage.opt_string("storageClassName"),
        ),
        archive=Archive(
            archive.boolean("enabled"), archive.integer("maxTraces"), archive.duration("retention")
        ),
        tenancy=Tenancy(
            tenancy.boolean("enabled"), tenancy.string("header"), tenancy.strings("tenants")
        ),
        query_auth=_query_auth(fields.obj("query").obj("auth")),
    )


def _otlp_exporter(fields: Fields) -> OTLPExporter:
    tls = fields.obj("tls")
    return OTLPExporter(
        name=fields.text("name"),
        endpoint=fields.text("endpoint"),
        protocol=fields.string("protocol"),
        headers=fields.string_map("headers"),
        compression=fields.opt_string("compression"),
        insecure=tls.boolean("insecure"),
        insecure_skip_verify=tls.boolean("insecureSkipVerify"),
        ca_secret=SecretKeyRef.read(tls.opt_obj("caSecret")),
        secret_headers=tuple(
            SecretHeader(item.text("name"), SecretKeyRef.read(item.opt_obj("secretKeyRef")))
            for item in fields.items("secretHeaders")
        ),
    )


def _metrics(fields: Fields) -> Metrics:
    prometheus, external = fields.obj("prometheus"), fields.opt_obj("external")
    return Metrics(
        enabled=fields.boolean("enabled"),
        prometheus=Prometheus(
            image=prometheus.opt_string("image"),
            retention=prometheus.duration("retention"),
            storage_size=prometheus.quantity("storageSize"),
            scrape_interval=prometheus.duration("scrapeInterval"),
            resources=prometheus.kubernetes("resources"),
        ),
        external=None
        if external is None
        else ExternalMetrics(external.text("url"), external.opt_string("otlpEndpoint")),
    )


def _security(fields: Fields) -> PipelineSecurity:
    auth = fields.obj("auth")
    consumers = TokenHolder.read_all(auth, "consumers")
    return PipelineSecurity(
        PipelineAuth(
            auth.boolean("enabled"), consumers, SecretKeyRef.read(auth.opt_obj("tokenSecretRef"))
        ),
        TLS.read(fields.obj("tls")),
    )


def parse_pipeline(spec: object) -> PipelineSpec:
    """The typed, defaulted spec of a TracingPipeline (``spec``: the resource's ``spec``, None
    when it has none). SpecError naming the field path for a value of the wrong type."""
    if spec is not None and not isinstance(spec, dict):
        raise SpecError("spec", f"expected an object, got {type(spec).__name__}")
    fields = Fields(apply_defaults_pipeline(spec), "spec")
    exporters, receivers = fields.obj("exporters"), fields.obj("receivers")
    redaction, network = fields.obj("redaction"), fields.obj("networkPolicy")
    debug = exporters.obj("debug")
    return PipelineSpec(
        sampling=_sampling(fields.obj("sampling")),
        collector=_collector(fields.obj("collector")),
        jaeger=_jaeger(fields.obj("jaeger")),
        exporters=Exporters(
            tuple(_otlp_exporter(item) for item in exporters.items("otlp")),
            debug.boolean("enabled"),
            debug.string("verbosity"),
        ),
        zipkin_receiver=receivers.obj("zipkin").boolean("enabled"),
        jaeger_receiver=receivers.obj("jaeger").boolean("enabled"),
        redaction=Redaction(
            hash_attributes=redaction.strings("hashAttributes"),
            default_patterns=redaction.boolean("defaultPatterns"),
            blocked_key_patterns=redaction.strings("blockedKeyPatterns"),
            blocked_values=redaction.strings("blockedValues"),
        ),
        metrics=_metrics(fields.obj("metrics")),
        network_policy_enabled=network.boolean("enabled"),
        query_access=network.string("queryAccess"),
        security=_security(fields.obj("security")),
    )
