"""OpenTelemetry Collector configuration (v0.161, our ``otelcol-kvtrace`` distribution).

Processor order: ``memory_limiter`` first, ``batch`` last. With two tiers the edge work
(Kubernetes metadata, resource detection, key hashing, redaction) happens once, in the
load-balancing tier, where applications connect (k8s_attributes may find a pod by the
connection's address), and the sampling tier runs only ``tail_sampling``; hashing twice
would hash the hash.

Component types use their v0.161 canonical names (``otlp_grpc``, ``otlp_http``,
``load_balancing``, ``resource_detection``, ``k8s_attributes``): the older ``otlp``,
``otlphttp``, ``loadbalancing``, ``resourcedetection`` and ``k8sattributes`` are deprecated
aliases that log warnings.
"""

from __future__ import annotations

import copy
from typing import Any

from kvtrace_operator.render import environment, names, sampling, security, tls
from kvtrace_operator.render.metrics import add_span_metrics
from kvtrace_operator.render.redaction import redaction_processor
from kvtrace_operator.spec import PipelineSpec, parse_pipeline
from kvtrace_operator.spec.pipeline import OTLPExporter

SAMPLING_TIER = "sampling"
LOADBALANCER_TIER = "loadbalancer"
TIERS = (SAMPLING_TIER, LOADBALANCER_TIER)
JAEGER_EXPORTER = "otlp_grpc/jaeger"


def listen(port: int) -> str:
    return f"0.0.0.0:{port}"


def otlp_receiver(server_tls: dict[str, Any] | None = None) -> dict[str, Any]:
    """gRPC and HTTP; both serve ``server_tls`` when given."""
    extra = {"tls": server_tls} if server_tls else {}
    return {
        "protocols": {
            "grpc": {"endpoint": listen(names.OTLP_GRPC_PORT), **copy.deepcopy(extra)},
            "http": {"endpoint": listen(names.OTLP_HTTP_PORT), **copy.deepcopy(extra)},
        }
    }


def self_telemetry(metrics_port: int) -> dict[str, Any]:
    """The process's own metrics, pulled by Prometheus on ``metrics_port``, under their
    Prometheus names (``otelcol_receiver_accepted_spans_total``, ``..._memory_rss_bytes``):
    collector 0.161 drops type and unit suffixes unless told not to, Jaeger's older core keeps
    them; the alert rules and dashboards query one set of names."""
    every_interface = "0.0.0.0"  # noqa: S104 - scraped from the pod network
    prometheus = {
        "host": every_interface,
        "port": metrics_port,
        "without_units": False,
        "without_type_suffix": False,
    }
    return {"metrics": {"readers": [{"pull": {"exporter": {"prometheus": prometheus}}}]}}


def receivers(spec: PipelineSpec, edge: bool) -> dict[str, Any]:
    """OTLP always; Zipkin and Jaeger only at the edge (where applications send). Every edge
    server gets the pipeline's authentication and TLS (``spec.security``)."""
    result: dict[str, Any] = {"otlp": otlp_receiver()}
    if edge and spec.zipkin_receiver:
        result["zipkin"] = {"endpoint": listen(names.ZIPKIN_PORT)}
    if edge and spec.jaeger_receiver:
        result["jaeger"] = {
            "protocols": {
                "grpc": {"endpoint": listen(names.JAEGER_GRPC_PORT)},
                "thrift_http": {"endpoint": listen(names.JAEGER_THRIFT_HTTP_PORT)},
            }
        }
    # Behind a load-balancing tier: TLS (every_hop modes) without auth.
    extra = (
        security.receiver_settings(spec)
        if edge
        else ({"tls": tls.server_tls(spec.security.tls)} if spec.security.tls.every_hop else {})
    )
    if extra:
        for receiver in result.values():
            for server in (
                receiver.get("protocols", {}).values() if "protocols" in receiver else [receiver]
            ):
                server.update(copy.deepcopy(extra))
    return result


def edge_processors(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, Any]:
    """The sending pod's Kubernetes metadata and resource detection (render/environment.py),
    hashing, redaction (the default patterns unless ``redaction.defaultPatterns`` is false,
    then the user's)."""
    result = environment.edge_processors(environment.environment(pipeline, spec))
    redaction = spec.redaction
    hashed = redaction.hash_attributes
    if hashed:
        result["attributes/hash"] = {"actions": [{"key": key, "action": "hash"} for key in hashed]}
    masking = redaction_processor(redaction)
    if masking:
        result["redaction"] = masking
    return result


def processors(
    pipeline: dict[str, Any], spec: PipelineSpec, edge: bool, tail: bool
) -> dict[str, Any]:
    collector = spec.collector
    result: dict[str, Any] = {
        "memory_limiter": {
            "check_interval": collector.check_interval.text,
            "limit_percentage": collector.limit_percentage,
            "spike_limit_percentage": collector.spike_limit_percentage,
        }
    }
    if edge:
        result.update(edge_processors(pipeline, spec))
    if tail:
        result["tail_sampling"] = sampling.tail_sampling_config(spec)
    result["batch"] = {
        "send_batch_size": collector.send_batch_size,
        "timeout": collector.batch_timeout.text,
    }
    return result


TLS_DIR = "/etc/otelcol-tls"  # not below the read-only config mount


def header_env_name(exporter: str, index: int) -> str:
    """The collector env var carrying secret header ``index`` of exporter ``exporter``."""
    return f"KVTRACE_EXPORTER_{exporter.upper().replace('-', '_')}_HEADER_{index}"


def ca_file(exporter: str) -> str:
    return f"{TLS_DIR}/{exporter}/ca.crt"


def user_exporter(exporter: OTLPExporter) -> tuple[str, dict[str, Any]]:
    """An OTLP exporter; secret headers are ``${env:...}`` references, CA files are mounted."""
    kind = "otlp_grpc" if exporter.protocol == "grpc" else "otlp_http"
    config: dict[str, Any] = {
        "endpoint": exporter.endpoint,
        "tls": {
            "insecure": exporter.insecure,
            "insecure_skip_verify": exporter.insecure_skip_verify,
        },
    }
    if exporter.ca_secret:
        config["tls"]["ca_file"] = ca_file(exporter.name)
    headers = dict(sorted((exporter.headers or {}).items()))
    for index, header in enumerate(exporter.secret_headers):
        headers[header.name] = "${env:" + header_env_name(exporter.name, index) + "}"
    if headers:
        config["headers"] = headers
    if exporter.compression:
        config["compression"] = exporter.compression
    return f"{kind}/{exporter.name}", config


def destination_exporters(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, Any]:
    """Jaeger, the user's OTLP exporters and the debug exporter."""
    result: dict[str, Any] = {}
    if spec.jaeger.enabled:
        host = names.service_dns(
            names.jaeger_otlp(names.name_of(pipeline)), names.namespace_of(pipeline)
        )
        # The name verified is the Service's even where the endpoint is rewritten (the local pod runner).
        result[JAEGER_EXPORTER] = {
            "endpoint": f"{host}:{names.OTLP_GRPC_PORT}",
            "tls": tls.exporter_tls(spec.security.tls, server_name=host),
        }
    for exporter in spec.exporters.otlp:
        key, config = user_exporter(exporter)
        result[key] = config
    if sampling.debug_exporter_on(spec):
        result["debug"] = {"verbosity": spec.exporters.debug_verbosity}
    return result


def loadbalancing_exporter(pipeline: dict[str, Any], spec: PipelineSpec) -> dict[str, Any]:
    """Every span of a trace to the same sampling-tier pod (DNS on its headless Service; with
    TLS the pods' certificate is verified for the Service's name, not the pod IP dialled)."""
    host = names.service_dns(
        names.sampling_collector(names.name_of(pipeline)), names.namespace_of(pipeline)
    )
    return {
        "load_balancing": {
            "routing_key": "traceID",
            "protocol": {
                "otlp": {
                    "tls": tls.exporter_tls(spec.security.tls, server_name=host),
                    "timeout": "5s",
                }
            },
            "resolver": {"dns": {"hostname": host, "port": str(names.OTLP_GRPC_PORT)}},
        }
    }


def service(
    extension_names: list[str],
    receiver_names: list[str],
    processor_names: list[str],
    exporter_names: list[str],
) -> dict[str, Any]:
    return {
        "extensions": extension_names,
        "telemetry": self_telemetry(names.COLLECTOR_METRICS_PORT),
        "pipelines": {
            "traces": {
                "receivers": receiver_names,
                "processors": processor_names,
                "exporters": exporter_names,
            }
        },
    }


def render_collector_config(pipeline: dict[str, Any], tier: str = SAMPLING_TIER) -> dict[str, Any]:
    """The collector config of one tier: ``sampling`` (the only tier, or the one behind the
    load balancer) or ``loadbalancer`` (the front tier of a two-tier pipeline)."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    spec = parse_pipeline(pipeline.get("spec"))
    two_tier = sampling.two_tier(spec)
    edge = tier == LOADBALANCER_TIER or not two_tier
    tail = tier == SAMPLING_TIER and sampling.uses_tail_sampling(spec)
    if tier == LOADBALANCER_TIER:
        exporters = loadbalancing_exporter(pipeline, spec)
    else:
        exporters = destination_exporters(pipeline, spec)
    recv = receivers(spec, edge)
    procs = processors(pipeline, spec, edge, tail)
    extensions = {
        "health_check": {"endpoint": listen(names.HEALTH_PORT)},
        **(security.extensions(spec) if edge else {}),
    }
    result = {
        "extensions": extensions,
        "receivers": recv,
        "processors": procs,
        "exporters": exporters,
        "service": service(list(extensions), list(recv), list(procs), list(exporters)),
    }
    if edge:  # refused (unauthenticated) requests are counted in the edge's own metrics
        result["service"]["telemetry"] = security.edge_telemetry(
            spec, result["service"]["telemetry"]
        )
    if tier == SAMPLING_TIER:  # where every span of a trace meets, before tail sampling
        result = add_span_metrics(result, pipeline, spec)
    return result
