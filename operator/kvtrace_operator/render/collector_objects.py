"""The collector's ServiceAccounts, RBAC, ConfigMaps, Deployments and Services: one tier, or
two (docs/design.md section 4: a load-balancing tier in front of the tail-sampling tier). Only
the edge tier (where applications connect) calls the API server (render/environment.py)."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import environment, names, sampling, security, sizing, tls
from kvtrace_operator.render.collector import (
    LOADBALANCER_TIER,
    SAMPLING_TIER,
    ca_file,
    header_env_name,
    render_collector_config,
)
from kvtrace_operator.render.deployment import Workload, service
from kvtrace_operator.render.images import Images
from kvtrace_operator.render.labels import COLLECTOR, COLLECTOR_LOADBALANCER, COLLECTOR_SAMPLING
from kvtrace_operator.spec import PipelineSpec

CONFIG_DIR = "/etc/otelcol"


def receiver_ports(spec: PipelineSpec) -> list[tuple[str, int]]:
    ports = [("otlp-grpc", names.OTLP_GRPC_PORT), ("otlp-http", names.OTLP_HTTP_PORT)]
    if spec.zipkin_receiver:
        ports.append(("zipkin", names.ZIPKIN_PORT))
    if spec.jaeger_receiver:
        ports += [
            ("jaeger-grpc", names.JAEGER_GRPC_PORT),
            ("jaeger-thrift", names.JAEGER_THRIFT_HTTP_PORT),
        ]
    return ports


def secret_env(spec: PipelineSpec) -> list[dict[str, Any]]:
    """The secret header values of the user's exporters, as env vars of the collector."""
    return [
        {
            "name": header_env_name(exporter.name, index),
            "valueFrom": {"secretKeyRef": header.secret_key_ref.as_dict()},
        }
        for exporter in spec.exporters.otlp
        for index, header in enumerate(exporter.secret_headers)
        if header.secret_key_ref is not None  # render.validate refuses a header without one
    ]


def ca_volumes(spec: PipelineSpec) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """A Secret volume (and its mount) per exporter with a CA certificate."""
    volumes = []
    for exporter in spec.exporters.otlp:
        secret = exporter.ca_secret
        if secret:
            volume = f"tls-{exporter.name}"
            volumes.append(
                (
                    {
                        "name": volume,
                        "secret": {
                            "secretName": secret.name,
                            "items": [{"key": secret.key, "path": "ca.crt"}],
                        },
                    },
                    {
                        "name": volume,
                        "mountPath": ca_file(exporter.name).rsplit("/", 1)[0],
                        "readOnly": True,
                    },
                )
            )
    return volumes


def workload(
    pipeline: dict[str, Any],
    spec: PipelineSpec,
    image: str,
    name: str,
    component: str,
    tier: str,
    ports: list[tuple[str, int]],
    destinations: bool,
    edge: bool,
) -> Workload:
    """``destinations``: this tier exports to Jaeger and the user's exporters (their secrets);
    ``edge``: applications send to it (the token file and serving certificate); render/tls.py
    adds the serving certificate of every TLS tier and the trust bundle of exporting ones."""
    settings = environment.environment(pipeline, spec, image)
    return Workload(
        program="otelcol",
        name=name,
        component=component,
        image=image,
        replicas=spec.collector.replicas,
        config=render_collector_config(pipeline, tier),
        config_dir=CONFIG_DIR,
        ports=[*ports, ("health", names.HEALTH_PORT), ("metrics", names.COLLECTOR_METRICS_PORT)],
        probe_path="/",
        resources=sizing.collector_resources(spec, samples=tier == SAMPLING_TIER),
        env=(secret_env(spec) if destinations else [])
        + (environment.pod_env(settings) if edge else []),
        api_access=edge and settings.uses_api,
        extra_volumes=(
            (ca_volumes(spec) if destinations else [])
            + (security.collector_volumes(spec, names.name_of(pipeline)) if edge else [])
            + tls.collector_volumes(
                pipeline,
                spec.security.tls,
                name,
                serves=edge or spec.security.tls.every_hop,
                exports_inside=destinations and spec.jaeger.enabled or tier == LOADBALANCER_TIER,
            )
        ),
    )


def collector_objects(
    pipeline: dict[str, Any], spec: PipelineSpec, images: Images
) -> list[dict[str, Any]]:
    """The collector tier(s) (``images``: the pipeline's, render.images.pipeline_images)."""
    name = names.name_of(pipeline)
    edge_ports = receiver_ports(spec)
    objects: list[dict[str, Any]] = []
    if sampling.two_tier(spec):
        back_ports = [("otlp-grpc", names.OTLP_GRPC_PORT)]
        back = workload(
            pipeline,
            spec,
            images.collector,
            names.sampling_collector(name),
            COLLECTOR_SAMPLING,
            SAMPLING_TIER,
            back_ports,
            destinations=True,
            edge=False,
        )
        objects += [
            back.service_account(pipeline),
            back.config_map(pipeline),
            back.deployment(pipeline),
            service(pipeline, back.name, COLLECTOR_SAMPLING, back_ports, headless=True),
        ]
        front = workload(
            pipeline,
            spec,
            images.collector,
            names.collector(name),
            COLLECTOR_LOADBALANCER,
            LOADBALANCER_TIER,
            edge_ports,
            destinations=False,
            edge=True,
        )
    else:
        front = workload(
            pipeline,
            spec,
            images.collector,
            names.collector(name),
            COLLECTOR,
            SAMPLING_TIER,
            edge_ports,
            destinations=True,
            edge=True,
        )
    objects += [
        front.service_account(pipeline),
        *environment.rbac_objects(
            pipeline,
            front.name,
            front.component,
            environment.environment(pipeline, spec, images.collector),
        ),
        front.config_map(pipeline),
        front.deployment(pipeline),
        service(pipeline, front.name, front.component, edge_ports),
    ]
    return objects
