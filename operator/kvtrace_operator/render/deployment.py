"""Generic builders for the pipeline's ConfigMaps, Deployments and Services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from kvtrace_operator.render import podspec
from kvtrace_operator.render.checksum import checksum
from kvtrace_operator.render.labels import child_metadata, selector_labels, standard_labels

CONFIG_KEY = "config.yaml"


def dump_config(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def config_map(
    owner: dict[str, Any], name: str, component: str, data: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(owner, name, component),
        "data": data,
    }


def service(
    owner: dict[str, Any],
    name: str,
    component: str,
    ports: list[tuple[str, int]],
    headless: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP"}
    if headless:
        spec = {"clusterIP": "None", "publishNotReadyAddresses": False}
    spec["selector"] = selector_labels(owner, component)
    spec["ports"] = [podspec.service_port(port_name, number) for port_name, number in ports]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(owner, name, component),
        "spec": spec,
    }


@dataclass
class Workload:
    """One single-container Deployment whose config file comes from a ConfigMap.

    ``program`` names the container after the program it runs (``otelcol``, ``jaeger``): the
    image's entrypoint is that program (no ``command``), so a local pod runner can map the
    container name to the binary."""

    program: str
    name: str
    component: str
    image: str
    replicas: int
    config: dict[str, Any]
    config_dir: str
    ports: list[tuple[str, int]]
    probe_path: str
    resources: dict[str, Any] | None = None
    extra_volumes: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    recreate: bool = False
    api_access: bool = False  # mount the ServiceAccount's token (the program calls the API)

    def container(self) -> dict[str, Any]:
        container = {
            "name": self.program,
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "args": [f"--config={self.config_dir}/{CONFIG_KEY}"],
            **({"env": self.env} if self.env else {}),
            "ports": [podspec.port(port_name, number) for port_name, number in self.ports],
            "livenessProbe": podspec.http_probe(self.probe_path, "health", period=10),
            "readinessProbe": podspec.http_probe(self.probe_path, "health", period=5),
            "volumeMounts": [
                {"name": "config", "mountPath": self.config_dir, "readOnly": True},
                podspec.tmp_mount(),
                *(mount for _, mount in self.extra_volumes),
            ],
            "securityContext": podspec.container_security_context(),
        }
        return podspec.with_resources(container, self.resources)

    def service_account(self, owner: dict[str, Any]) -> dict[str, Any]:
        """Its own ServiceAccount, with a token only where the program calls the API (the
        collector's edge tier for k8s_attributes and the k8snode detector; never Jaeger)."""
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": child_metadata(owner, self.name, self.component),
            "automountServiceAccountToken": self.api_access,
        }

    def config_map(self, owner: dict[str, Any]) -> dict[str, Any]:
        return config_map(owner, self.name, self.component, {CONFIG_KEY: dump_config(self.config)})

    def deployment(self, owner: dict[str, Any]) -> dict[str, Any]:
        volumes = [
            podspec.config_volume("config", self.name, CONFIG_KEY, CONFIG_KEY),
            podspec.tmp_volume(),
            *(volume for volume, _ in self.extra_volumes),
        ]
        strategy = (
            {"type": "Recreate"}
            if self.recreate
            else {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        )
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": child_metadata(owner, self.name, self.component),
            "spec": {
                "replicas": self.replicas,
                "strategy": strategy,
                "selector": {"matchLabels": selector_labels(owner, self.component)},
                "template": {
                    "metadata": podspec.template_metadata(
                        standard_labels(owner, self.component), checksum(self.config)
                    ),
                    "spec": {
                        "serviceAccountName": self.name,
                        "automountServiceAccountToken": self.api_access,
                        "enableServiceLinks": False,
                        "securityContext": podspec.pod_security_context(),
                        "containers": [self.container()],
                        "volumes": volumes,
                    },
                },
            },
        }
