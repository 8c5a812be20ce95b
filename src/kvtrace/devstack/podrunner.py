"""Run the processes behind KWOK pods on the host (development and tests only).

KWOK marks pods Running but runs nothing. A :class:`PodRunner` follows the pods of one
namespace (optionally a label selector) and, for each Running pod, starts every container's
``command`` + ``args`` locally:

- on the pod's own loopback address (``127.x.y.z``, sticky per pod name, so a pod that a
  StatefulSet recreates comes back on the same address); ``0.0.0.0``/``[::]``, the pod's
  KWOK IP and ``127.0.0.1`` (the pod's own loopback, e.g. a server only its sidecar may
  reach) in arguments and environment are rewritten to that address, and
  ``fieldRef: status.podIP`` resolves to it;
- with the container's environment: ``env`` (values, ``$(VAR)`` expansion, ``fieldRef``,
  ``configMapKeyRef``, ``secretKeyRef``, ``resourceFieldRef``) and ``envFrom``;
- with its volumes as local directories: ConfigMap, Secret, projected and downwardAPI
  volumes are materialised (and refreshed when the objects change, as the kubelet does),
  emptyDir is a temp dir, a PersistentVolumeClaim uses its bound hostPath volume; every
  ``mountPath`` in arguments, environment and ``workingDir`` is rewritten to the local path;
- a serving certificate in a Secret volume (``tls.crt`` + ``tls.key``, a leaf with DNS names)
  is served re-issued with the pod's loopback address added, by the CA in the namespace that
  signed it (:func:`kvtrace.devstack.local_tls.loopback_leaf`): clients dial that address
  instead of the Service name and keep verifying the certificate;
- executables are resolved from the venv's bin directory first, then the cached upstream
  tools, then ``PATH``;
- init containers run first, in order, each to completion (as the kubelet does); files of an
  image the host does not have come from ``image_roots`` (image -> a local directory standing
  for the image's root: ``/autoinstrumentation`` of the Python agent image is
  ``ROOT/autoinstrumentation``; :func:`agent_image_roots` gives the injection agents').

Container mode (``engine=`` docker or podman, the ``containers`` test tier): each container
runs as a real container of its image (``images`` maps a rendered image to a local one) with
exactly the rendered command (none: the image's entrypoint), args, environment and security
context, on the host network and the pod's loopback address as above; volumes are the same
local directories, bind-mounted at their ``mountPath`` (so paths are not rewritten), the
endpoint map's directory is mounted read-only, a projected ServiceAccount token is a
TokenRequest token of the pod's ServiceAccount bound to the pod, and the API server is
``KUBERNETES_SERVICE_HOST``/``_PORT`` as the kubelet sets them
(:mod:`kvtrace.devstack.containers`).

Pods deleted → processes stopped; pods recreated (new uid) → restarted; a process that
exits is restarted per the pod's ``restartPolicy``. Service and pod DNS names are mapped to
the local addresses through the endpoint map (:mod:`kvtrace.shared.endpoints`), whose
path every process gets as ``KVTRACE_ENDPOINT_MAP``. Nothing here knows what the pods are.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kvtrace.devstack import containers as containers_mod
from kvtrace.devstack import tools
from kvtrace.devstack.proc import (
    Process,
    StartupError,
    keep_workdirs,
    no_proxy_env,
    port_open,
    wait_until,
)
from kvtrace.shared import endpoints as endpoints_mod

Obj = dict[str, Any]
CommandResolver = Callable[[Obj, Obj], Sequence[str] | None]

# What an engine's client needs of the host's environment in container mode (nothing else of
# the host reaches a container).
ENGINE_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "CONTAINERS_CONF",
    "DOCKER_HOST",
    "CONTAINER_HOST",
)
# Volume kinds a container may write to (Kubernetes mounts the others read-only).
WRITABLE_VOLUMES = ("emptyDir", "persistentVolumeClaim", "hostPath", "ephemeral")

# requests lets these override the OTLP exporter's CA file (docs/security.md, TLS); a pod has
# neither, so a process run as a pod must not inherit them from the host.
HOST_CA_OVERRIDES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class LoopbackAllocator:
    """Hands out distinct loopback addresses; the second octet derives from the pid so
    concurrent test sessions on one machine do not collide."""

    def __init__(self, second_octet: int | None = None) -> None:
        self.second = second_octet if second_octet is not None else 1 + os.getpid() % 250
        self._counter = itertools.count(2)
        self._by_key: dict[str, str] = {}
        self._lock = threading.Lock()

    def allocate(self, key: str | None = None) -> str:
        """A fresh address, or the one already given to ``key``."""
        with self._lock:
            if key is not None and key in self._by_key:
                return self._by_key[key]
            n = next(self._counter)
            address = f"127.{self.second}.{n // 250}.{n % 250 + 2}"
            if key is not None:
                self._by_key[key] = address
            return address


ALLOCATOR = LoopbackAllocator()


def agent_image_roots() -> dict[str, Path]:
    """The injection agents' images (render/images.py) -> the tool cache's copies of their
    files (``kvtrace dev tools``), for those that are built."""
    from kvtrace_operator.render.images import JAVA_AGENT_IMAGE, PYTHON_AGENT_IMAGE

    agents = {
        PYTHON_AGENT_IMAGE: tools.TOOLS["python-agent"],
        JAVA_AGENT_IMAGE: tools.TOOLS["java-agent"],
    }
    return {image: tool.directory for image, tool in agents.items() if tools.verify(tool) is None}


def venv_bin() -> Path:
    return Path(sys.executable).parent


_RESOLVED: dict[str, str] = {}


def resolve_executable(name: str) -> str | None:
    """venv bin first, then a cached upstream tool of that name, then PATH (found ones cached:
    verifying a cached tool checksums it, and pods are re-rendered every poll)."""
    if name not in _RESOLVED:
        found = _resolve_executable(name)
        if found is None:
            return None
        _RESOLVED[name] = found
    return _RESOLVED[name]


def _resolve_executable(name: str) -> str | None:
    base = Path(name).name
    if (
        "/" in name
        and os.access(name, os.X_OK)
        and not Path(name).is_dir()
        and not str(name).startswith(("/usr/bin/", "/bin/", "/usr/local/bin/"))
    ):
        return name
    candidate = venv_bin() / base
    if candidate.exists() and os.access(candidate, os.X_OK):
        return str(candidate)
    with contextlib.suppress(KeyError, FileNotFoundError):
        return str(tools.binary(base))
    return shutil.which(base)


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known variables replaced, ``$$`` escapes, others kept."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(sub, value)


def _selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _to_dict(obj: Any) -> Obj:
    return obj if isinstance(obj, dict) else obj.to_dict()


@dataclasses.dataclass
class _Rendered:
    """What a pod's processes get, after every rewrite, with the current endpoint map."""

    argv: dict[str, list[str]]  # container -> argv (executable resolved)
    env: dict[str, dict[str, str]]  # container -> environment
    cwd: dict[str, Path]
    init: list[str]  # init containers (in argv/env/cwd too), in the order they run
    files: dict[str, dict[str, bytes]]  # volume -> relative path -> content
    names: dict[str, str | None]  # every host:port in argv/env -> where the map sends it


@dataclasses.dataclass
class _Running:
    pod_name: str
    uid: str
    address: str
    pod: Obj
    directory: Path
    restart_policy: str
    volumes: dict[str, Path] = dataclasses.field(default_factory=dict)
    rendered: _Rendered | None = None
    processes: dict[str, Process] = dataclasses.field(default_factory=dict)
    restarts: dict[str, int] = dataclasses.field(default_factory=dict)
    next_restart: dict[str, float] = dataclasses.field(default_factory=dict)


class PodRunner:
    """Follow pods in ``namespace`` (matching ``selector``) and run their processes locally."""

    def __init__(
        self,
        cluster: Any,
        namespace: str,
        selector: Mapping[str, str] | str | None = None,
        *,
        workdir: Path | None = None,
        endpoint_map: endpoints_mod.EndpointMapFile | None = None,
        allocator: LoopbackAllocator | None = None,
        env: Mapping[str, str] | None = None,
        containers: Iterable[str] | None = None,
        resolve_command: CommandResolver | None = None,
        poll_interval: float = 0.3,
        restart_delay: float = 1.0,
        engine: str | None = None,
        images: Mapping[str, str] | None = None,
        image_roots: Mapping[str, Path] | None = None,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.selector = selector
        self._given_workdir = workdir
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"kvtrace-pods-{namespace}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.endpoint_map = endpoint_map or endpoints_mod.EndpointMapFile(
            self.workdir / "endpoints.json"
        )
        self.allocator = allocator or ALLOCATOR
        self.extra_env = dict(env or {})
        self.containers = set(containers) if containers is not None else None
        self.resolve_command = resolve_command
        self.poll_interval = poll_interval
        self.restart_delay = restart_delay
        self.engine = engine  # container mode when set
        self.images = dict(images or {})
        self.image_roots = dict(image_roots or {})
        self.errors: dict[str, str] = {}  # pod uid -> why its processes could not start
        self._owner = f"podrunner/{namespace}/{selector}/{id(self)}"
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._cache: dict[tuple[str, str], Obj | None] = {}
        # resolve_command's answers per (pod uid, container, image): pods are re-rendered every
        # poll, and a callback may be costly (tools.binary checksums the binary at each call).
        self._commands: dict[tuple[str, str, str], list[str]] = {}
        # Re-issued serving certificates per (original tls.crt, pod address): see _serving_files.
        self._leaves: dict[tuple[bytes, str], tuple[bytes, bytes] | None] = {}
        # Projected ServiceAccount tokens per (pod uid, path): (token, refresh after).
        self._tokens: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._api_server: dict[str, str] | None = None  # container mode: KUBERNETES_SERVICE_*

    # ----------------------------------------------------------------- public API
    @property
    def endpoint_map_path(self) -> Path:
        return self.endpoint_map.path

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PodRunner:
        self._client = self.cluster.new_client()
        self.sync()  # first pass synchronously: errors surface in the caller
        self._thread = threading.Thread(
            target=self._loop, name=f"podrunner-{self.namespace}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        # Stop the processes before the loop thread ends: those it (re)started die with it
        # (PR_SET_PDEATHSIG follows the thread), and they deserve a SIGTERM first.
        with self._lock:
            self._stopping = True
            for running in list(self._running.values()):
                self._stop_pod(running)
            self._running.clear()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.endpoint_map.remove(self._owner)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self._given_workdir is None and not keep_workdirs():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def address(self, pod_name: str) -> str:
        """The loopback address of a pod (allocated on first use; sticky per pod name)."""
        return self.allocator.allocate(f"{self.namespace}/{pod_name}")

    def pods(self) -> dict[str, str]:
        """Pods whose processes are running now: ``{pod name: address}``."""
        with self._lock:
            return {
                r.pod_name: r.address
                for r in self._running.values()
                if any(p.alive() for p in r.processes.values())
            }

    def processes(self, pod_name: str) -> dict[str, Process]:
        with self._lock:
            for running in self._running.values():
                if running.pod_name == pod_name:
                    return dict(running.processes)
        return {}

    def restarts(self, pod_name: str) -> int:
        with self._lock:
            return sum(
                r.restarts.get(c, 0)
                for r in self._running.values()
                if r.pod_name == pod_name
                for c in r.processes
            )

    def logs(self, pod_name: str, container: str | None = None, lines: int = 60) -> str:
        procs = self.processes(pod_name)
        chosen = [procs[container]] if container else list(procs.values())
        return "\n".join(f"--- {p.name}\n{p.tail(lines)}" for p in chosen)

    def resolve(self, address: str) -> str:
        """``"host:port"`` through this runner's endpoint map."""
        return self.endpoint_map.entries().get(address.lower(), address)

    def wait_running(self, count: int, timeout: float = 60.0) -> dict[str, str]:
        """Wait until ``count`` pods run processes whose declared ports accept connections."""

        def ready() -> dict[str, str] | None:
            pods = self.pods()
            if len(pods) < count:
                return None
            with self._lock:
                for running in self._running.values():
                    for port in _container_ports(running.pod, self.containers):
                        if not port_open(running.address, port["containerPort"], timeout=0.2):
                            return None
            return pods

        try:
            return wait_until(
                ready, timeout=timeout, what=f"{count} pod process(es) listening", interval=0.2
            )
        except StartupError as exc:
            problems = "; ".join(self.errors.values()) or "none reported"
            logs = "\n".join(self.logs(name, lines=15) for name in self.pods())
            raise StartupError(f"{exc}\nstart problems: {problems}\n{logs}") from None

    # ----------------------------------------------------------------- loop
    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - the API may blip; keep following
                self._note(f"sync failed: {exc!r}")

    def _note(self, message: str) -> None:
        with contextlib.suppress(OSError), (self.workdir / "podrunner.log").open("a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def _list(self, kind: str) -> list[Obj]:
        from lightkube.resources.core_v1 import Pod, Service

        resource = {"Pod": Pod, "Service": Service}[kind]
        labels: Any = None
        if kind == "Pod" and self.selector:
            labels = (
                self.selector
                if isinstance(self.selector, Mapping)
                else _parse_selector(self.selector)
            )
        return [
            _to_dict(o)
            for o in self._client.list(resource, namespace=self.namespace, labels=labels)
        ]

    def sync(self) -> None:
        """One reconciliation pass (the thread calls this every ``poll_interval``)."""
        with self._lock:
            if self._stopping:
                return
            self._cache.clear()
            pods = self._list("Pod")
            wanted = {
                p["metadata"]["uid"]: p
                for p in pods
                if (p.get("status") or {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
            }
            for uid in [u for u in self._running if u not in wanted]:
                self._stop_pod(self._running.pop(uid))
            # Names map to addresses as soon as pods are wanted (addresses are allocated up
            # front), so pods that name each other render resolved from their first start.
            self.endpoint_map.update(
                self._owner, self._endpoint_entries(list(wanted.values()), self._list("Service"))
            )
            names = self.endpoint_map.entries()
            for uid, pod in wanted.items():
                running = self._running.get(uid)
                try:
                    if running is None:
                        self._running[uid] = self._start_pod(pod, names)
                    else:
                        running.pod = pod
                        self._update_pod(running, names)
                    self.errors.pop(uid, None)
                except Exception as exc:  # noqa: BLE001 - retried next pass (a ConfigMap may come later)
                    message = f"{pod['metadata']['name']}: {exc}"
                    if self.errors.get(uid) != message:
                        self._note(f"cannot start {message}")
                    self.errors[uid] = message

    # ----------------------------------------------------------------- API objects
    def _get(self, kind: str, name: str) -> Obj | None:
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
                self._cache[key] = _to_dict(self._client.get(resource, name, namespace=namespace))
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
                self._cache[key] = None
        return self._cache[key]

    def _data(self, kind: str, name: str, optional: bool = False) -> dict[str, bytes]:
        obj = self._get(kind, name)
        if obj is None:
            if optional:
                return {}
            raise LookupError(f"{kind} {self.namespace}/{name} not found")
        if kind == "Secret":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    # ----------------------------------------------------------------- values
    def _field(self, pod: Obj, address: str, path: str) -> str:
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

    def _env(self, pod: Obj, container: Obj, address: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                ref = source.get(key)
                if ref:
                    data = self._data(kind, ref["name"], ref.get("optional", False))
                    env.update({prefix + k: v.decode() for k, v in data.items()})
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = expand(str(item.get("value") or ""), env)
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                env[name] = self._field(pod, address, source["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                kind, ref = (
                    ("ConfigMap", source["configMapKeyRef"])
                    if "configMapKeyRef" in source
                    else ("Secret", source["secretKeyRef"])
                )
                data = self._data(kind, ref["name"], ref.get("optional", False))
                if ref["key"] in data:
                    env[name] = data[ref["key"]].decode()
                elif not ref.get("optional", False):
                    raise LookupError(f"{kind} {ref['name']} has no key {ref['key']!r}")
            elif "resourceFieldRef" in source:
                env[name] = _resource_value(container, source["resourceFieldRef"])
            else:
                env[name] = ""
        return env

    # ----------------------------------------------------------------- volumes
    def _volume_files(self, pod: Obj, address: str, volume: Obj) -> dict[str, bytes] | None:
        """Files of a ConfigMap/Secret/projected/downwardAPI volume; None for other kinds."""
        files: dict[str, bytes] = {}

        def add(kind: str, ref: Obj) -> None:
            data = self._data(kind, ref["name"], ref.get("optional", False))
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
                    files[item["path"]] = self._field(
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
                    files[source["serviceAccountToken"]["path"]] = self._token(
                        pod, source["serviceAccountToken"]
                    )
        else:
            return None
        return files

    def _token(self, pod: Obj, source: Obj) -> bytes:
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

    def _serving_files(self, files: dict[str, bytes], address: str) -> dict[str, bytes]:
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
                {k: base64.b64decode(v) for k, v in (_to_dict(s).get("data") or {}).items()}
                for s in self._client.list(Secret, namespace=self.namespace)
            ]
            pair = loopback_leaf(cert.decode(errors="replace"), issuers(secrets), address)
            self._leaves[key] = (pair.cert_pem.encode(), pair.key_pem.encode()) if pair else None
            self._note(
                f"serving certificate for {address}: "
                f"{'re-issued with that address' if pair else 'served as it is (no issuer key here)'}"
            )
        reissued = self._leaves[key]
        return (
            files if reissued is None else {**files, "tls.crt": reissued[0], "tls.key": reissued[1]}
        )

    def _volume_dir(self, running: _Running, volume: Obj) -> Path:
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            pvc = self._get("PersistentVolumeClaim", claim)
            pv_name = ((pvc or {}).get("spec") or {}).get("volumeName")
            pv = self._get("PersistentVolume", pv_name) if pv_name else None
            host_path = (((pv or {}).get("spec") or {}).get("hostPath") or {}).get("path")
            path = Path(host_path) if host_path else self.workdir / "claims" / claim
        elif "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
        else:
            path = running.directory / "volumes" / volume["name"]
        path.mkdir(parents=True, exist_ok=True)
        if self.engine is not None and any(kind in volume for kind in WRITABLE_VOLUMES):
            path.chmod(0o777)  # as the kubelet makes an emptyDir: any container user may write
        return path

    @staticmethod
    def _write_files(running: _Running, rendered: _Rendered) -> None:
        """Write changed files only, each atomically (programs may be re-reading them)."""
        for volume, files in rendered.files.items():
            target = running.volumes[volume]
            for rel, content in files.items():
                path = target / rel
                if path.is_file() and path.read_bytes() == content:
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(content)
                os.replace(tmp, path)

    # ----------------------------------------------------------------- rendering
    def _selected(self, pod: Obj) -> list[Obj]:
        return [
            c
            for c in pod["spec"].get("containers") or []
            if self.containers is None or c["name"] in self.containers
        ]

    def _render(self, running: _Running, names: Mapping[str, str]) -> _Rendered:
        """Everything the pod's processes get; raises LookupError while a referenced object is missing."""
        pod = running.pod
        kwok_ip = (pod.get("status") or {}).get("podIP")

        def mounts(containers: Iterable[Obj]) -> list[tuple[str, Path]]:
            if self.engine is not None:  # containers see their volumes at the real paths
                return []
            found = {
                m["mountPath"].rstrip("/") or "/": running.volumes[m["name"]] / m.get("subPath", "")
                for c in containers
                for m in c.get("volumeMounts") or []
                if m["name"] in running.volumes
            }
            return sorted(found.items(), key=lambda item: -len(item[0]))

        seen: dict[str, str | None] = {}
        # Files are refreshed in place, as the kubelet does, never a reason to restart: a
        # node re-reading its peers file must keep running when the membership changes.
        pod_rewrite = _Rewriter(
            mounts(pod["spec"].get("containers") or []), running.address, kwok_ip, names
        )
        files: dict[str, dict[str, bytes]] = {}
        for volume in pod["spec"].get("volumes") or []:
            content = self._volume_files(pod, running.address, volume)
            if content is not None and "secret" in volume:
                content = self._serving_files(content, running.address)
            if content is not None:
                files[volume["name"]] = {
                    rel: pod_rewrite.text(data) for rel, data in content.items()
                }
        argvs: dict[str, list[str]] = {}
        envs: dict[str, dict[str, str]] = {}
        cwds: dict[str, Path] = {}
        init = [c["name"] for c in pod["spec"].get("initContainers") or []]
        for container in [*(pod["spec"].get("initContainers") or []), *self._selected(pod)]:
            cname = container["name"]
            if self.engine is not None:
                container_env = self._env(pod, container, running.address)
                rewrite = _Rewriter([], running.address, kwok_ip, names, seen)
                argvs[cname], envs[cname] = self._container_run(
                    running, container, container_env, rewrite
                )
                cwds[cname] = running.directory
                continue
            raw = self._argv(pod, container)
            if raw is None:
                raise LookupError(
                    f"container {cname} has no command and no resolve_command mapping "
                    f"for image {container.get('image')!r}"
                )
            container_env = self._env(pod, container, running.address)
            rewrite = _Rewriter(
                mounts([container]) + self._image_mounts(container),
                running.address,
                kwok_ip,
                names,
                seen,
            )
            argv = [rewrite(expand(a, container_env)) for a in raw]
            executable = resolve_executable(argv[0])
            if executable is None:
                raise FileNotFoundError(
                    f"container {cname}: executable {argv[0]!r} not found "
                    f"(venv {venv_bin()}, tool cache, PATH)"
                )
            argvs[cname] = [executable, *argv[1:]]
            env = no_proxy_env(
                {
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith("PYTEST_") and k not in HOST_CA_OVERRIDES
                }
            )
            env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
            kubeconfig = getattr(self.cluster, "kubeconfig", None)
            if kubeconfig:
                env["KUBECONFIG"] = str(kubeconfig)
            env.update({k: rewrite(v) for k, v in container_env.items()})
            env.update(
                self.extra_env
            )  # the runner's caller has the last word (e.g. a test's collector)
            env.update(
                {
                    endpoints_mod.ENV: str(self.endpoint_map.path),
                    "HOSTNAME": pod["metadata"]["name"],
                    "KVTRACE_POD_ADDRESS": running.address,
                }
            )
            envs[cname] = env
            workdir = container.get("workingDir")
            cwd = Path(rewrite(workdir)) if workdir else running.directory
            cwds[cname] = cwd if cwd.is_dir() else running.directory
        return _Rendered(argvs, envs, cwds, init, files, seen)

    def _image_mounts(self, container: Obj) -> list[tuple[str, Path]]:
        """What stands for the files of the container's image: each top-level entry of its
        ``image_roots`` directory at ``/ENTRY``."""
        root = self.image_roots.get(str(container.get("image")))
        if root is None or not root.is_dir():
            return []
        return [(f"/{entry.name}", entry) for entry in sorted(root.iterdir())]

    def _run_init(self, running: _Running, timeout: float = 120.0) -> None:
        """Run the pod's init containers in order, each to completion; raise if one fails."""
        rendered = running.rendered
        assert rendered is not None
        for cname in rendered.init:
            log = self.workdir / "logs" / f"{running.pod_name}_{cname}.log"
            process = Process(
                f"{running.pod_name}/{cname}",
                rendered.argv[cname],
                log,
                env=rendered.env[cname],
                cwd=rendered.cwd[cname],
            ).start()
            self._note(f"init {process.name} pid {process.pid}: {' '.join(rendered.argv[cname])}")
            try:
                code = process.popen.wait(timeout=timeout)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                process.stop(timeout=5.0)
                raise RuntimeError(
                    f"init container {cname} did not finish within {timeout:g}s"
                ) from None
            if code != 0:
                raise RuntimeError(
                    f"init container {cname} exited with {code}:\n{process.tail(10)}"
                )

    def _container_run(
        self, running: _Running, container: Obj, container_env: dict[str, str], rewrite: _Rewriter
    ) -> tuple[list[str], dict[str, str]]:
        """Container mode: the ``ENGINE run`` argv of one container and the engine client's
        environment (the container's variables ride in it, passed by name)."""
        assert self.engine is not None
        pod = running.pod
        env = {k: rewrite(v) for k, v in container_env.items()}
        env.update(self.extra_env)
        env.update(
            {
                endpoints_mod.ENV: f"{containers_mod.ENDPOINT_MAP_DIR}/{self.endpoint_map.path.name}",
                "HOSTNAME": pod["metadata"]["name"],
                "KVTRACE_POD_ADDRESS": running.address,
            }
        )
        env.update(self._service_env())
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = [
            containers_mod.Mount(
                self.endpoint_map.path.parent, containers_mod.ENDPOINT_MAP_DIR, True
            )
        ]
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None or mount["name"] not in running.volumes:
                continue
            writable = any(kind in volume for kind in WRITABLE_VOLUMES) and not mount.get(
                "readOnly"
            )
            mounts.append(
                containers_mod.Mount(
                    running.volumes[mount["name"]] / mount.get("subPath", ""),
                    mount["mountPath"],
                    not writable,
                )
            )
        image = str(container.get("image"))
        argv = containers_mod.run_argv(
            self.engine,
            name=f"kvtrace-{self.namespace}-{running.pod_name}-{container['name']}-{running.uid[:8]}",
            pod=pod,
            container=container,
            image=self.images.get(image, image),
            env_names=sorted(env),
            mounts=mounts,
            command=[rewrite(expand(a, container_env)) for a in container.get("command") or []],
            args=[rewrite(expand(a, container_env)) for a in container.get("args") or []],
        )
        client_env = {k: v for k, v in os.environ.items() if k in ENGINE_ENV}
        return argv, {**client_env, **env}

    def _service_env(self) -> dict[str, str]:
        """``KUBERNETES_SERVICE_HOST``/``_PORT``: the API server of the cluster's kubeconfig."""
        kubeconfig = getattr(self.cluster, "kubeconfig", None)
        if not kubeconfig:
            return {}
        if self._api_server is None:
            import yaml

            config = yaml.safe_load(Path(kubeconfig).read_text())
            server = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
            self._api_server = {
                "KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(server.port or 443),
            }
        return self._api_server

    # ----------------------------------------------------------------- processes
    def _start_pod(self, pod: Obj, names: Mapping[str, str]) -> _Running:
        """Start every selected container of ``pod``; on any failure stop what started and raise."""
        meta = pod["metadata"]
        name = meta["name"]
        directory = self.workdir / "pods" / f"{name}-{meta['uid'][:8]}"
        running = _Running(
            name,
            meta["uid"],
            self.address(name),
            pod,
            directory,
            pod["spec"].get("restartPolicy") or "Always",
        )
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for volume in pod["spec"].get("volumes") or []:
                running.volumes[volume["name"]] = self._volume_dir(running, volume)
            running.rendered = self._render(running, names)
            self._write_files(running, running.rendered)
            self._run_init(running)
            for cname in running.rendered.argv:
                if cname not in running.rendered.init:
                    self._start_container(running, cname)
        except BaseException:
            self._stop_pod(running)
            raise
        return running

    def _update_pod(self, running: _Running, names: Mapping[str, str]) -> None:
        """Refresh volume files; restart the pod's processes when a name in their arguments or
        environment now maps elsewhere (typically: another runner started running its target)."""
        rendered = self._render(running, names)
        self._write_files(running, rendered)
        previous, running.rendered = running.rendered, rendered
        changed = sorted(
            k for k, v in (previous.names if previous else {}).items() if rendered.names.get(k) != v
        )
        if changed:
            self._note(f"{running.pod_name}: endpoints {changed} changed; restarting its processes")
            self._stop_pod(running)
            for cname in rendered.argv:
                if cname not in rendered.init:
                    self._start_container(running, cname)
            return
        self._restart_exited(running)

    def _argv(self, pod: Obj, container: Obj) -> list[str] | None:
        argv = list(container.get("command") or [])
        if not argv and self.resolve_command is not None:
            key = (pod["metadata"]["uid"], container["name"], str(container.get("image")))
            argv = list(self._commands.get(key) or self.resolve_command(pod, container) or [])
            if argv:  # no answer (or an exception) is asked again next pass
                self._commands[key] = argv
        if not argv:
            return None
        return argv + list(container.get("args") or [])

    def _start_container(self, running: _Running, cname: str) -> None:
        rendered = running.rendered
        assert rendered is not None
        log = self.workdir / "logs" / f"{running.pod_name}_{cname}.log"
        argv, env, cwd = rendered.argv[cname], rendered.env[cname], rendered.cwd[cname]
        if self.engine is not None:
            process: Process = containers_mod.ContainerProcess(
                self.engine,
                argv[argv.index("--name") + 1],
                f"{running.pod_name}/{cname}",
                argv,
                log,
                env=env,
                cwd=cwd,
            ).start()
        else:
            process = Process(f"{running.pod_name}/{cname}", argv, log, env=env, cwd=cwd).start()
        running.processes[cname] = process
        self._note(
            f"started {process.name} pid {process.pid} on {running.address}: "
            f"{' '.join(rendered.argv[cname])}"
        )

    def _restart_exited(self, running: _Running) -> None:
        now = time.monotonic()
        for cname, process in list(running.processes.items()):
            code = process.returncode
            if code is None:
                continue
            if running.restart_policy == "Never" or (
                running.restart_policy == "OnFailure" and code == 0
            ):
                continue
            due = running.next_restart.get(cname)
            if due is None:
                count = running.restarts.get(cname, 0)
                running.next_restart[cname] = now + min(self.restart_delay * 2**count, 10.0)
                self._note(f"{process.name} exited with {code}; restarting\n{process.tail(10)}")
            elif now >= due:
                del running.next_restart[cname]
                running.restarts[cname] = running.restarts.get(cname, 0) + 1
                self._start_container(running, cname)

    def _stop_pod(self, running: _Running) -> None:
        for process in running.processes.values():
            process.stop(timeout=5.0)
            self._note(f"stopped {process.name}")
        running.processes.clear()
        running.next_restart.clear()

    # ----------------------------------------------------------------- names
    def _endpoint_entries(self, pods: list[Obj], services: list[Obj]) -> dict[str, str]:
        ns = self.namespace
        entries: dict[str, str] = {}
        wanted = sorted(pods, key=lambda p: p["metadata"]["name"])
        for pod in wanted:
            spec, name = pod["spec"], pod["metadata"]["name"]
            address = self.address(name)
            ports = [p["containerPort"] for p in _container_ports(pod, None)]
            hosts = [name]
            kwok_ip = (pod.get("status") or {}).get("podIP")
            if kwok_ip:
                hosts.append(kwok_ip)
            if spec.get("subdomain"):
                base = f"{spec.get('hostname') or name}.{spec['subdomain']}"
                hosts += [
                    base,
                    f"{base}.{ns}",
                    f"{base}.{ns}.svc",
                    f"{base}.{ns}.svc.cluster.local",
                ]
            for host in hosts:
                for port in ports:
                    entries[f"{host}:{port}"] = f"{address}:{port}"
        for svc in services:
            spec = svc.get("spec") or {}
            backends = [
                p
                for p in wanted
                if _selector_matches(spec.get("selector"), p["metadata"].get("labels"))
            ]
            if not backends:
                continue
            name = svc["metadata"]["name"]
            hosts = [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
            if spec.get("clusterIP") and spec["clusterIP"] != "None":
                hosts.append(spec["clusterIP"])
            for port in spec.get("ports") or []:
                target = _target_port(backends[0], port.get("targetPort") or port["port"])
                if target is None:
                    continue
                for host in hosts:
                    entries[f"{host}:{port['port']}"] = (
                        f"{self.address(backends[0]['metadata']['name'])}:{target}"
                    )
        return entries


_HOST_PORT = re.compile(
    r"(?<![\w.-])((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?):(\d{1,5})(?![\d])"
)


class _Rewriter:
    """Rewrite one argument, env value or mounted file for the host: mount paths → local
    directories, ``0.0.0.0``/``[::]``/the KWOK pod IP → the pod's loopback address, and
    ``host:port`` that the endpoint map knows → its address. Every ``host:port`` met is
    recorded in ``seen`` with its mapped address (or None), so a change is noticed."""

    def __init__(
        self,
        mounts: list[tuple[str, Path]],
        address: str,
        kwok_ip: str | None,
        names: Mapping[str, str] | None = None,
        seen: dict[str, str | None] | None = None,
    ) -> None:
        # One pass over all mount paths (longest first), so a replacement is never rewritten
        # again (a volume mounted at /tmp must not touch the local path given for another).
        self.mounts = {mount: str(local) for mount, local in mounts if mount != "/"}
        self.mount_pattern = (
            re.compile(
                r"(?<![\w./-])("
                + "|".join(re.escape(m) for m in sorted(self.mounts, key=len, reverse=True))
                + r")(?=/|$|[^\w.-])"
            )
            if self.mounts
            else None
        )
        # 127.0.0.1 too: in a pod it is the pod's own loopback, which here is the pod's address.
        addresses = [r"0\.0\.0\.0", r"\[::\]", r"127\.0\.0\.1"] + (
            [re.escape(kwok_ip)] if kwok_ip else []
        )
        self.wildcard = re.compile(r"(?<![\d.])(?:" + "|".join(addresses) + r")(?![\d])")
        self.address = address
        self.names = names or {}
        self.seen = seen if seen is not None else {}

    def _name(self, match: re.Match[str]) -> str:
        key = f"{match.group(1).lower()}:{match.group(2)}"
        target = self.names.get(key)
        self.seen[key] = target
        return target or match.group(0)

    def __call__(self, value: str) -> str:
        value = self.wildcard.sub(_literal(self.address), value)
        value = _HOST_PORT.sub(self._name, value)
        if self.mount_pattern is not None:  # last: local paths are not scanned again
            value = self.mount_pattern.sub(lambda match: self.mounts[match.group(1)], value)
        return value

    def text(self, data: bytes) -> bytes:
        """The same rewrite for file content that is UTF-8 text; other bytes stay as they are."""
        try:
            return self(data.decode("utf-8")).encode()
        except UnicodeDecodeError:
            return data


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement that inserts ``text`` verbatim (no backslash processing)."""
    return lambda _match: text


def _container_ports(pod: Obj, only: set[str] | None) -> list[Obj]:
    return [
        port
        for c in pod["spec"].get("containers") or []
        if only is None or c["name"] in only
        for port in c.get("ports") or []
        if (port.get("protocol") or "TCP") == "TCP"
    ]


def _target_port(pod: Obj, target: int | str) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for port in _container_ports(pod, None):
        if port.get("name") == target:
            return int(port["containerPort"])
    return None


def _resource_value(container: Obj, ref: Obj) -> str:
    section, _, resource = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(section) or {}).get(resource)
    return str(value) if value is not None else "0"


def _parse_selector(text: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
    return {k.strip(): v.strip() for k, v in pairs}
