"""Jaeger's PVC (badger), ConfigMap, Deployment and Services."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import names, query_access, query_proxy, sizing, tls
from kvtrace_operator.render.deployment import Workload, service
from kvtrace_operator.render.images import Images
from kvtrace_operator.render.jaeger import BADGER_DIR, render_jaeger_config
from kvtrace_operator.render.labels import JAEGER, child_metadata
from kvtrace_operator.spec import PipelineSpec
from kvtrace_operator.spec.pipeline import JaegerStorage

CONFIG_DIR = "/etc/jaeger"
OTLP_PORTS = [("otlp-grpc", names.OTLP_GRPC_PORT), ("otlp-http", names.OTLP_HTTP_PORT)]


def data_claim(pipeline: dict[str, Any], storage: JaegerStorage) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size.text}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(pipeline, names.jaeger_data(names.name_of(pipeline)), JAEGER),
        "spec": spec,
    }


def jaeger_objects(
    pipeline: dict[str, Any], spec: PipelineSpec, images: Images
) -> list[dict[str, Any]]:
    """One replica (memory and badger are single-node stores), recreated on change; with
    query auth bearer/oidc, the ``query-proxy`` sidecar serves the query port (``images``:
    the pipeline's, render.images.pipeline_images)."""
    jaeger = spec.jaeger
    if not jaeger.enabled:
        return []
    name = names.name_of(pipeline)
    badger = jaeger.storage.type == "badger"
    volumes = []
    if badger:
        volumes.append(
            (
                {"name": "data", "persistentVolumeClaim": {"claimName": names.jaeger_data(name)}},
                {"name": "data", "mountPath": BADGER_DIR},
            )
        )
    workload = Workload(
        program="jaeger",
        name=names.jaeger(name),
        component=JAEGER,
        image=images.jaeger,
        replicas=1,
        config=render_jaeger_config(pipeline),
        config_dir=CONFIG_DIR,
        ports=[
            *OTLP_PORTS,
            *([] if query_access.proxied(spec) else query_access.query_ports(spec)),
            ("health", names.HEALTH_PORT),
            ("metrics", names.JAEGER_METRICS_PORT),
        ],
        probe_path="/status",
        resources=sizing.jaeger_resources(spec),
        extra_volumes=volumes
        + tls.jaeger_volumes(pipeline, spec.security.tls)
        + query_access.jaeger_volumes(spec, name),
        recreate=True,
    )
    objects = [data_claim(pipeline, jaeger.storage)] if badger else []
    credentials = query_access.credentials_secret(pipeline, spec)
    objects += [credentials] if credentials else []
    return objects + [
        workload.service_account(pipeline),
        workload.config_map(pipeline),
        with_query_proxy(workload.deployment(pipeline), pipeline, spec, images.query_proxy),
        service(pipeline, names.jaeger_query(name), JAEGER, query_access.query_ports(spec)),
        service(pipeline, names.jaeger_otlp(name), JAEGER, OTLP_PORTS),
    ]


def with_query_proxy(
    deployment: dict[str, Any], pipeline: dict[str, Any], spec: PipelineSpec, proxy_image: str
) -> dict[str, Any]:
    """The Deployment with the ``query-proxy`` sidecar and its volumes (bearer/oidc): the
    tokens file and the issuer's CA only in the proxy, the serving certificate (TLS) in both."""
    own = query_proxy.proxy_volumes(spec, names.name_of(pipeline))
    serving = tls.jaeger_volumes(pipeline, spec.security.tls)
    container = query_proxy.proxy_container(
        spec, [mount for _, mount in own + serving], proxy_image
    )
    if container is None:
        return deployment
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"].append(container)
    pod["volumes"].extend(volume for volume, _ in own)
    return deployment
