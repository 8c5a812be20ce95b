"""Pieces shared by every pod the operator renders (Pod Security "restricted")."""

from __future__ import annotations

from typing import Any

from kvtrace_operator.render.labels import CHECKSUM_ANNOTATION

USER_ID = 10001


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def port(name: str, number: int) -> dict[str, Any]:
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def service_port(name: str, number: int) -> dict[str, Any]:
    return {"name": name, "port": number, "targetPort": name, "protocol": "TCP"}


def http_probe(
    path: str, port_name: str, period: int, failures: int = 3, scheme: str = "HTTP"
) -> dict[str, Any]:
    get: dict[str, Any] = {"path": path, "port": port_name}
    if scheme != "HTTP":  # HTTPS: the kubelet does not verify the certificate
        get["scheme"] = scheme
    return {
        "httpGet": get,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def config_volume(name: str, configmap: str, key: str, path: str) -> dict[str, Any]:
    """A ConfigMap volume with one key: mounted as a directory (never subPath), so the
    kubelet refreshes the file in place when the ConfigMap changes."""
    return {"name": name, "configMap": {"name": configmap, "items": [{"key": key, "path": path}]}}


def tmp_volume() -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {}}


def tmp_mount() -> dict[str, Any]:
    return {"name": "tmp", "mountPath": "/tmp"}


def template_metadata(labels: dict[str, str], config_checksum: str) -> dict[str, Any]:
    return {"labels": labels, "annotations": {CHECKSUM_ANNOTATION: config_checksum}}


def with_resources(container: dict[str, Any], resources: dict[str, Any] | None) -> dict[str, Any]:
    if resources:
        container["resources"] = resources
    return container
