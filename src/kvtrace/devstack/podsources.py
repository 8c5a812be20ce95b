"""What the kubelet reads from the API for a pod, for the pod runner (development and tests
only): the containers' environment (``env`` with ``$(VAR)`` expansion, ``fieldRef``,
``configMapKeyRef``, ``secretKeyRef``, ``resourceFieldRef``; ``envFrom``), the files of its
ConfigMap, Secret, projected (ServiceAccount tokens by the TokenRequest API included) and
downwardAPI volumes, serving certificates re-issued for the pod's loopback address, and the local
directories standing for its volumes (:class:`PodSources`, one per runner, its object cache
cleared each pass). Imports nothing of the operator or the KV node.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kvtrace.devstack.podnames import expand

Obj = dict[str, Any]
# Volume kinds a container may write to (Kubernetes mounts the others read-only).
WRITABLE_VOLUMES = ("emptyDir", "persistentVolumeClaim", "hostPath", "ephemeral")


def to_dict(obj: Any) -> Obj:
    """A lightkube object (or an already plain dict) as a plain dict."""
    return obj if isinstance(obj, dict) else obj.to_dict()


class PodSources:
    """The API objects a namespace's pods refer to, read through ``client`` (lightkube) with a
    cache that :meth:`clear` empties (once per runner pass); ServiceAccount tokens come from
    ``cluster.kubectl`` (``create token``), re-issued serving leaves and tokens are kept
    across passes. ``note`` records what happened (the runner's log)."""

    def __init__(
        self,
        cluster: Any,
        namespace: str,
        workdir: Path,
        note: Callable[[str], None],
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.workdir = workdir
        self.note = note
        self.client: Any = None
        self._cache: dict[tuple[str, str], Obj | None] = {}
        # Re-issued serving certificates per (original tls.crt, pod address): see serving_files.
        self._leaves: dict[tuple[bytes, str], tuple[bytes, bytes] | None] = {}
        # Projected ServiceAccount tokens per (pod uid, path): (token, refresh after).
        self._tokens: dict[tuple[str, str], tuple[bytes, float]] = {}

    def clear(self) -> None:
        """Forget the objects read so far: the next reads see the API's current state."""
        self._cache.clear()

    def get(self, kind: str, name: str) -> Obj | None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import (
            ConfigMap,
            PersistentVolume,
            PersistentVolumeClaim,
            Secret,
        )

        key = (kind, name)
        if key not in self._cache:
            resource = {
                "ConfigMap": ConfigMap,
                "Secret": Secret,
                "PersistentVolumeClaim": PersistentVolumeClaim,
                "PersistentVolume": PersistentVolume,
            }[kind]
            try:
                namespace = None if kind == "PersistentVolume" else self.namespace
                self._cache[key] = to_dict(self.client.get(resource, name, namespace=namespace))
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
                self._cache[key] = None
        return self._cache[key]

    def data(self, kind: str, name: str, optional: bool = False) -> dict[str, bytes]:
        obj = self.get(kind, name)
        if obj is None:
            if optional:
                return {}
            raise LookupError(f"{kind} {self.namespace}/{name} not found")
        if kind == "Secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def field(self, pod: Obj, address: str, path: str) -> str:
        meta = pod["metadata"]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        values = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta.get("namespace", self.namespace),
            "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.podIP": address,
            "status.podIPs": address,
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        return str(values.get(path, ""))

    def env(self, pod: Obj, container: Obj, address: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                ref = source.get(key)
                if ref:
                    data = self.data(kind, ref["name"], ref.get("optional", False))
                    env.update({prefix + k: v.decode() for k, v in data.items()})
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = expand(str(item.get("value") or ""), env)
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                env[name] = self.field(pod, address, source["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                kind, ref = (
                    ("ConfigMap", source["configMapKeyRef"])
                    if "configMapKeyRef" in source
                    else ("Secret", source["secretKeyRef"])
                )
                data = self.data(kind, ref["name"], ref.get("optional", False))
                if ref["key"] in data:
                    env[name] = data[ref["key"]].decode()
                elif not ref.get("optional", False):
                    raise LookupError(f"{kind} {ref['name']} has no key {ref['key']!r}")
            elif "resourceFieldRef" in source:
                env[name] = _resource_value(container, source["resourceFieldRef"])
            else:
                env[name] = ""
        return env

    def volume_files(self, pod: Obj, address: str, volume: Obj) -> dict[str, bytes] | None:
        """Files of a ConfigMap/Secret/projected/downwardAPI volume; None for other kinds."""
        files: dict[str, bytes] = {}

        def add(kind: str, ref: Obj) -> None:
            data = self.data(kind, ref["name"], ref.get("optional", False))
            items = ref.get("items")
            if items:
                files.update(
                    {item["path"]: data[item["key"]] for item in items if item["key"] in data}
                )
            else:
                files.update(data)

        def add_downward(ref: Obj) -> None:
            for item in ref.get("items") or []:
                if "fieldRef" in item:
                    files[item["path"]] = self.field(
                        pod, address, item["fieldRef"]["fieldPath"]
                    ).encode()

        if "configMap" in volume:
            add("ConfigMap", volume["configMap"])
        elif "secret" in volume:
            add("Secret", {**volume["secret"], "name": volume["secret"]["secretName"]})
        elif "downwardAPI" in volume:
            add_downward(volume["downwardAPI"])
        elif "projected" in volume:
            for source in volume["projected"].get("sources") or []:
                if "configMap" in source:
                    add("ConfigMap", source["configMap"])
                elif "secret" in source:
                    add("Secret", source["secret"])
                elif "downwardAPI" in source:
                    add_downward(source["downwardAPI"])
                elif "serviceAccountToken" in source:
                    files[source["serviceAccountToken"]["path"]] = self.token(
                        pod, source["serviceAccountToken"]
                    )
        else:
            return None
        return files

    def token(self, pod: Obj, source: Obj) -> bytes:
        """A TokenRequest token of the pod's ServiceAccount bound to the pod, renewed at half
        its life (the kubelet renews at 80%)."""
        meta = pod["metadata"]
        key = (meta["uid"], source["path"])
        cached = self._tokens.get(key)
        if cached is None or time.monotonic() > cached[1]:
            seconds = max(600, int(source.get("expirationSeconds") or 3600))
            args = [
                "-n",
                self.namespace,
                "create",
                "token",
                pod["spec"].get("serviceAccountName") or "default",
                "--bound-object-kind=Pod",
                f"--bound-object-name={meta['name']}",
                f"--bound-object-uid={meta['uid']}",
                f"--duration={seconds}s",
            ]
            if source.get("audience"):
                args.append(f"--audience={source['audience']}")
            token = self.cluster.kubectl(*args).stdout.strip().encode()
            self._tokens[key] = cached = (token, time.monotonic() + seconds / 2)
        return cached[0]

    def serving_files(self, files: dict[str, bytes], address: str) -> dict[str, bytes]:
        """A Secret volume's files with a serving leaf re-issued for ``address`` (once per
        certificate: the Secrets are read only then), or unchanged."""
        cert = files.get("tls.crt")
        if cert is None or "tls.key" not in files:
            return files
        key = (cert, address)
        if key not in self._leaves:
            from lightkube.resources.core_v1 import Secret

            from kvtrace.devstack.local_tls import issuers, loopback_leaf

            secrets = [
                {k: base64.b64decode(v) for k, v in (to_dict(s).get("data") or {}).items()}
                for s in self.client.list(Secret, namespace=self.namespace)
            ]
            pair = loopback_leaf(cert.decode(errors="replace"), issuers(secrets), address)
            self._leaves[key] = (pair.cert_pem.encode(), pair.key_pem.encode()) if pair else None
            self.note(
                f"serving certificate for {address}: "
                f"{'re-issued with that address' if pair else 'served as it is (no issuer key here)'}"
            )
        reissued = self._leaves[key]
        return (
            files if reissued is None else {**files, "tls.crt": reissued[0], "tls.key": reissued[1]}
        )

    def volume_dir(self, pod_directory: Path, volume: Obj, *, shared: bool = False) -> Path:
        """The local directory standing for ``volume`` of a pod whose own directory is
        ``pod_directory``: a claim's bound hostPath volume (else one per claim in the
        workdir), a hostPath as it is, any other kind under the pod's directory. ``shared``
        (containers running as other users): writable kinds are made writable by all."""
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            pvc = self.get("PersistentVolumeClaim", claim)
            pv_name = ((pvc or {}).get("spec") or {}).get("volumeName")
            pv = self.get("PersistentVolume", pv_name) if pv_name else None
            host_path = (((pv or {}).get("spec") or {}).get("hostPath") or {}).get("path")
            path = Path(host_path) if host_path else self.workdir / "claims" / claim
        elif "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
        else:
            path = pod_directory / "volumes" / volume["name"]
        path.mkdir(parents=True, exist_ok=True)
        if shared and any(kind in volume for kind in WRITABLE_VOLUMES):
            path.chmod(0o777)  # as the kubelet makes an emptyDir: any container user may write
        return path


def write_files(volumes: Mapping[str, Path], files: Mapping[str, Mapping[str, bytes]]) -> None:
    """Write each volume's files into its directory (``volumes``: volume name -> directory),
    changed files only, each atomically (programs may be re-reading them)."""
    for volume, content_by_path in files.items():
        target = volumes[volume]
        for rel, content in content_by_path.items():
            path = target / rel
            if path.is_file() and path.read_bytes() == content:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(content)
            os.replace(tmp, path)


def _resource_value(container: Obj, ref: Obj) -> str:
    section, _, resource = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(section) or {}).get(resource)
    return str(value) if value is not None else "0"
