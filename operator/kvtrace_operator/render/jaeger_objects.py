"""Jaeger's PVC (badger), ConfigMap, Deployment and Services."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render import names, query_access, tls
from kvtrace_operator.render.deployment import Workload, service
from kvtrace_operator.render.jaeger import BADGER_DIR, render_jaeger_config
from kvtrace_operator.render.labels import JAEGER, child_metadata

CONFIG_DIR = "/etc/jaeger"
OTLP_PORTS = [("otlp-grpc", names.OTLP_GRPC_PORT), ("otlp-http", names.OTLP_HTTP_PORT)]
QUERY_PORTS = [("query-http", names.JAEGER_QUERY_HTTP_PORT), ("query-grpc", names.JAEGER_QUERY_GRPC_PORT)]


def data_claim(pipeline: dict[str, Any], storage: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage["size"]}},
    }
    if storage.get("storageClassName"):
        spec["storageClassName"] = storage["storageClassName"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": child_metadata(pipeline, names.jaeger_data(names.name_of(pipeline)), JAEGER),
            "spec": spec}


def jaeger_objects(pipeline: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One replica (memory and badger are single-node stores), recreated on change."""
    jaeger = spec["jaeger"]
    if not jaeger["enabled"]:
        return []
    name = names.name_of(pipeline)
    badger = jaeger["storage"]["type"] == "badger"
    volumes = []
    if badger:
        volumes.append(({"name": "data", "persistentVolumeClaim": {"claimName": names.jaeger_data(name)}},
                        {"name": "data", "mountPath": BADGER_DIR}))
    workload = Workload(
        program="jaeger",
        name=names.jaeger(name),
        component=JAEGER,
        image=jaeger["image"],
        replicas=1,
        config=render_jaeger_config(pipeline),
        config_dir=CONFIG_DIR,
        ports=[*OTLP_PORTS, *QUERY_PORTS, ("health", names.HEALTH_PORT), ("metrics", names.JAEGER_METRICS_PORT)],
        probe_path="/status",
        resources=jaeger.get("resources"),
        extra_volumes=volumes + tls.jaeger_volumes(pipeline, spec) + query_access.volumes(spec, name),
        recreate=True,
    )
    objects = [data_claim(pipeline, jaeger["storage"])] if badger else []
    credentials = query_access.credentials_secret(pipeline, spec)
    objects += [credentials] if credentials else []
    return objects + [
        workload.service_account(pipeline),
        workload.config_map(pipeline),
        workload.deployment(pipeline),
        service(pipeline, names.jaeger_query(name), JAEGER, QUERY_PORTS),
        service(pipeline, names.jaeger_otlp(name), JAEGER, OTLP_PORTS),
    ]
