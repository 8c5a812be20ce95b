"""The pod runner's container mode (development and tests only, the ``containers`` test tier):
each container of a pod runs as a real container of its image, with exactly the rendered
command (none: the image's entrypoint), args, environment and security context (user and
groups, read-only root filesystem, capabilities, privilege escalation), on the host network
(its programs bind the pod's loopback address, rewritten into their arguments and files by the
runner), its volumes bind-mounted at their ``mountPath`` (read-only unless a writable kind and
not ``readOnly``), the endpoint map's directory read-only at :data:`ENDPOINT_MAP_DIR`, and the
API server as ``KUBERNETES_SERVICE_HOST``/``_PORT`` as the kubelet sets them.

Pure: :func:`pod_mounts`, :func:`container_env` and :func:`run_argv` (a pod, one of its
containers and where its volumes are on the host in, an argument vector out);
:class:`ContainerProcess` runs one. The engine and the images are
:mod:`kvtrace.devstack.containers`. Imports nothing of the operator or the KV node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kvtrace.devstack.containers import is_podman, ulimits
from kvtrace.devstack.podsources import WRITABLE_VOLUMES
from kvtrace.devstack.proc import Process
from kvtrace.shared import endpoints as endpoints_mod

# Where a container finds the endpoint map's directory (mounted read-only).
ENDPOINT_MAP_DIR = "/run/kvtrace-endpoints"
# What an engine's client needs of the host's environment (nothing else of the host reaches a
# container: the container's own variables ride in the client's environment, passed by name).
ENGINE_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "CONTAINERS_CONF",
    "DOCKER_HOST",
    "CONTAINER_HOST",
)


@dataclasses.dataclass(frozen=True)
class Mount:
    """One bind mount: a host path at ``target`` in the container."""

    source: Path
    target: str
    read_only: bool


# The names the ``kubernetes`` Service has in a pod (kopf dials https://kubernetes.default.svc,
# port 443, whatever KUBERNETES_SERVICE_HOST says).
KUBERNETES_SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def pod_mounts(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    volumes: Mapping[str, Path],
    endpoint_map: Path,
) -> list[Mount]:
    """The container's bind mounts: the endpoint map's directory read-only at
    :data:`ENDPOINT_MAP_DIR`, then each ``volumeMount`` whose volume has a local directory in
    ``volumes`` (with its ``subPath``), writable only for a writable kind (emptyDir, claim,
    hostPath, ephemeral) not mounted ``readOnly``, as Kubernetes mounts them."""
    by_name = {v["name"]: v for v in pod.get("spec", {}).get("volumes") or []}
    mounts = [Mount(endpoint_map.parent, ENDPOINT_MAP_DIR, True)]
    for mount in container.get("volumeMounts") or []:
        volume = by_name.get(mount["name"])
        if volume is None or mount["name"] not in volumes:
            continue
        writable = any(kind in volume for kind in WRITABLE_VOLUMES) and not mount.get("readOnly")
        mounts.append(
            Mount(
                volumes[mount["name"]] / mount.get("subPath", ""), mount["mountPath"], not writable
            )
        )
    return mounts


def container_env(
    rendered: Mapping[str, str],
    *,
    pod_name: str,
    address: str,
    endpoint_map: Path,
    api_server: Mapping[str, str],
) -> dict[str, str]:
    """What the container's processes see: the rendered environment, and what the kubelet and
    the harness add (``HOSTNAME``, the API server's ``KUBERNETES_SERVICE_*``, the endpoint map
    at its path inside the container, ``KVTRACE_POD_ADDRESS``)."""
    return {
        **rendered,
        endpoints_mod.ENV: f"{ENDPOINT_MAP_DIR}/{endpoint_map.name}",
        "HOSTNAME": pod_name,
        "KVTRACE_POD_ADDRESS": address,
        **api_server,
    }


def engine_client_env(container: Mapping[str, str], host: Mapping[str, str]) -> dict[str, str]:
    """The engine client's environment: what it needs of the ``host`` (:data:`ENGINE_ENV`),
    then the container's variables, which ``-e NAME`` passes on by name."""
    return {**{k: v for k, v in host.items() if k in ENGINE_ENV}, **container}


def api_server_env(kubeconfig: Path | str) -> dict[str, str]:
    """``KUBERNETES_SERVICE_HOST``/``_PORT``: the API server of ``kubeconfig``'s first cluster."""
    import yaml

    config = yaml.safe_load(Path(kubeconfig).read_text())
    server = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
    return {
        "KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(server.port or 443),
    }


def _security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The effective security context: the container's fields over the pod's."""
    pod_level = dict(pod.get("spec", {}).get("securityContext") or {})
    return {**pod_level, **(container.get("securityContext") or {})}


def _security_flags(engine: str, pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    context = _security(pod, container)
    pod_level = pod.get("spec", {}).get("securityContext") or {}
    flags: list[str] = []
    user = context.get("runAsUser")
    if user is not None:
        group = context.get("runAsGroup")
        flags += ["--user", f"{user}:{group}" if group is not None else str(user)]
    for extra in [pod_level.get("fsGroup"), *(pod_level.get("supplementalGroups") or [])]:
        if extra is not None:
            flags += ["--group-add", str(extra)]
    if context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
        if is_podman(engine):  # podman would add tmpfs mounts of its own; Kubernetes does not
            flags.append("--read-only-tmpfs=false")
    capabilities = context.get("capabilities") or {}
    flags += [f"--cap-drop={cap}" for cap in capabilities.get("drop") or []]
    flags += [f"--cap-add={cap}" for cap in capabilities.get("add") or []]
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if context.get("privileged"):
        flags.append("--privileged")
    return flags


def run_argv(
    engine: str,
    *,
    name: str,
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    image: str,
    args: Sequence[str],
    env_names: Sequence[str],
    mounts: Sequence[Mount],
    command: Sequence[str] = (),
    hosts: Mapping[str, str] | None = None,
) -> list[str]:
    """``ENGINE run`` for one container: on the host network (the processes bind the pod's
    loopback address, rewritten into their arguments and files by the runner), with the
    rendered user, read-only root, capabilities and privilege escalation, the volumes as bind
    mounts, the environment passed by name (values come from the engine's own environment,
    so secrets never appear in a command line), ``hosts`` (name -> address) in its
    /etc/hosts, ``command`` (empty: the image's entrypoint) and ``args``."""
    argv = [
        engine,
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        "--pull",
        "never",
        "--stop-timeout",
        "10",
    ]
    argv += [flag for limit in ulimits() for flag in ("--ulimit", limit)]
    argv += _security_flags(engine, pod, container)
    for mount in mounts:
        argv += ["-v", f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}"]
    for env_name in env_names:
        argv += ["-e", env_name]
    for host, address in sorted((hosts or {}).items()):
        argv += ["--add-host", f"{host}:{address}"]
    if container.get("workingDir"):
        argv += ["--workdir", str(container["workingDir"])]
    if command:
        argv += ["--entrypoint", command[0]]
    return [*argv, image, *command[1:], *args]


class ServiceForwarder:
    """What kube-proxy does for one Service, for containers on the host network: accepts on
    ``listen`` (a loopback address and the Service's port) and relays each connection to
    ``target`` (``host``, ``port``). The pod runner gives containers the ``kubernetes``
    Service this way: :data:`KUBERNETES_SERVICE_NAMES` at a loopback address, port 443, relayed
    to the local API server (whose certificate names them)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> ServiceForwarder:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(self.listen)
        except OSError as exc:
            server.close()
            raise OSError(f"cannot listen on {self.listen[0]}:{self.listen[1]}: {exc}") from exc
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, name=f"forward-{self.listen}", daemon=True).start()
        return self

    def _accept(self) -> None:
        server = self._server
        while server is not None:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):  # one side ended: end both
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            for sock in (source, sink):
                if sock in self._open:
                    self._open.discard(sock)
                    sock.close()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):  # wakes the blocked accept() and stops listening
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()


class ContainerProcess(Process):
    """``ENGINE run --rm --name NAME ...`` as a :class:`Process`; stopping it also removes the
    container by name (the engine's client may die before its container does)."""

    def __init__(self, engine: str, container_name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine = engine
        self.container_name = container_name

    def start(self) -> Process:
        self.remove()  # a leftover of an interrupted run would hold the name
        return super().start()

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.remove()

    def remove(self) -> None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                [self.engine, "rm", "--force", "--time", "5", self.container_name],
                capture_output=True,
                timeout=60,
                check=False,
            )
