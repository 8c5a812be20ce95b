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
(:mod:`kvtrace.devstack.podcontainers`).

What the pods refer to in the API (environment sources, volume files, tokens) is read by
:mod:`kvtrace.devstack.podsources`; names, addresses and rewrites are the pure functions of
:mod:`kvtrace.devstack.podnames`.

Pods deleted → processes stopped; pods recreated (new uid) → restarted; a process that
exits is restarted per the pod's ``restartPolicy``. Service and pod DNS names are mapped to
the local addresses through the endpoint map (:mod:`kvtrace.shared.endpoints`), whose
path every process gets as ``KVTRACE_ENDPOINT_MAP``; a pod's processes restart when a name in
their arguments or environment, or a Service's name in their mounted files, maps elsewhere
(mounted files are otherwise refreshed in place). Nothing here knows what the pods are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kvtrace.devstack import podcontainers, tools
from kvtrace.devstack.podnames import (
    Rewriter,
    container_ports,
    endpoint_entries,
    expand,
    is_service_address,
    parse_selector,
)
from kvtrace.devstack.podsources import PodSources, to_dict, write_files
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
        self.sources = PodSources(cluster, namespace, self.workdir, self._note)
        # resolve_command's answers per (pod uid, container, image): pods are re-rendered every
        # poll, and a callback may be costly (tools.binary checksums the binary at each call).
        self._commands: dict[tuple[str, str, str], list[str]] = {}
        # Container mode: KUBERNETES_SERVICE_*, and the kubernetes Service's names and relay.
        self._api_server: dict[str, str] = {}
        self._service_hosts: dict[str, str] = {}
        self._kubernetes: podcontainers.ServiceForwarder | None = None

    # ----------------------------------------------------------------- public API
    @property
    def endpoint_map_path(self) -> Path:
        return self.endpoint_map.path

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PodRunner:
        self._client = self.sources.client = self.cluster.new_client()
        kubeconfig = getattr(self.cluster, "kubeconfig", None)
        if self.engine is not None and kubeconfig:
            self._start_kubernetes_service(kubeconfig)
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
        if self._kubernetes is not None:
            self._kubernetes.stop()
            self._kubernetes = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = self.sources.client = None
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
                    for port in container_ports(running.pod, self.containers):
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
                else parse_selector(self.selector)
            )
        return [
            to_dict(o) for o in self._client.list(resource, namespace=self.namespace, labels=labels)
        ]

    def sync(self) -> None:
        """One reconciliation pass (the thread calls this every ``poll_interval``)."""
        with self._lock:
            if self._stopping:
                return
            self.sources.clear()
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
                self._owner,
                endpoint_entries(
                    self.namespace, list(wanted.values()), self._list("Service"), self.address
                ),
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
        seen: dict[str, str | None] = {}
        # Files are refreshed in place, as the kubelet does. A pod's name in them is never a
        # reason to restart (a node re-reading its peers file must keep running when the
        # membership changes); a Service's name is, as in arguments and environment: a program
        # reads its configuration once (the collector's exporter to Jaeger's Service), and in a
        # cluster that name resolves from the Service's creation, before any backend runs.
        file_names: dict[str, str | None] = {}
        pod_rewrite = Rewriter(
            self._mounts(running, pod["spec"].get("containers") or []),
            running.address,
            kwok_ip,
            names,
            file_names,
        )
        files: dict[str, dict[str, bytes]] = {}
        for volume in pod["spec"].get("volumes") or []:
            content = self.sources.volume_files(pod, running.address, volume)
            if content is not None and "secret" in volume:
                content = self.sources.serving_files(content, running.address)
            if content is not None:
                files[volume["name"]] = {
                    rel: pod_rewrite.text(data) for rel, data in content.items()
                }
        seen.update({k: v for k, v in file_names.items() if is_service_address(k)})
        rendered = _Rendered({}, {}, {}, [], files, seen)
        rendered.init = [c["name"] for c in pod["spec"].get("initContainers") or []]
        for container in [*(pod["spec"].get("initContainers") or []), *self._selected(pod)]:
            cname = container["name"]
            container_env = self.sources.env(pod, container, running.address)
            if self.engine is not None:  # containers see their volumes at the real paths
                rewrite = Rewriter([], running.address, kwok_ip, names, seen)
                rendered.argv[cname], rendered.env[cname] = self._container_run(
                    running, container, container_env, rewrite
                )
                rendered.cwd[cname] = running.directory
                continue
            rewrite = Rewriter(
                self._mounts(running, [container]) + self._image_mounts(container),
                running.address,
                kwok_ip,
                names,
                seen,
            )
            rendered.argv[cname] = self._process_argv(pod, container, container_env, rewrite)
            rendered.env[cname] = self._process_env(running, container_env, rewrite)
            workdir = container.get("workingDir")
            cwd = Path(rewrite(workdir)) if workdir else running.directory
            rendered.cwd[cname] = cwd if cwd.is_dir() else running.directory
        return rendered

    def _mounts(self, running: _Running, containers: Iterable[Obj]) -> list[tuple[str, Path]]:
        """Process mode: ``(mountPath, local directory)`` of the containers' volume mounts,
        longest path first (container mode mounts them at the real paths: none)."""
        if self.engine is not None:
            return []
        found = {
            m["mountPath"].rstrip("/") or "/": running.volumes[m["name"]] / m.get("subPath", "")
            for c in containers
            for m in c.get("volumeMounts") or []
            if m["name"] in running.volumes
        }
        return sorted(found.items(), key=lambda item: -len(item[0]))

    def _process_argv(
        self, pod: Obj, container: Obj, container_env: Mapping[str, str], rewrite: Rewriter
    ) -> list[str]:
        """Process mode: the container's argv, rewritten, its executable resolved on the host."""
        raw = self._argv(pod, container)
        if raw is None:
            raise LookupError(
                f"container {container['name']} has no command and no resolve_command mapping "
                f"for image {container.get('image')!r}"
            )
        argv = [rewrite(expand(a, container_env)) for a in raw]
        executable = resolve_executable(argv[0])
        if executable is None:
            raise FileNotFoundError(
                f"container {container['name']}: executable {argv[0]!r} not found "
                f"(venv {venv_bin()}, tool cache, PATH)"
            )
        return [executable, *argv[1:]]

    def _process_env(
        self, running: _Running, container_env: Mapping[str, str], rewrite: Rewriter
    ) -> dict[str, str]:
        """Process mode: the host's environment (no proxies, no CA overrides), the venv first
        on PATH, the cluster's kubeconfig, then the container's rewritten variables, the
        runner's ``env`` (the caller has the last word: e.g. a test's collector) and the
        harness's own (endpoint map, HOSTNAME, the pod's address)."""
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
        env.update(self.extra_env)
        env.update(
            {
                endpoints_mod.ENV: str(self.endpoint_map.path),
                "HOSTNAME": running.pod_name,
                "KVTRACE_POD_ADDRESS": running.address,
            }
        )
        return env

    def _container_run(
        self, running: _Running, container: Obj, container_env: dict[str, str], rewrite: Rewriter
    ) -> tuple[list[str], dict[str, str]]:
        """Container mode: the ``ENGINE run`` argv of one container and the engine client's
        environment (the container's variables ride in it, passed by name)."""
        assert self.engine is not None
        env = podcontainers.container_env(
            {**{k: rewrite(v) for k, v in container_env.items()}, **self.extra_env},
            pod_name=running.pod_name,
            address=running.address,
            endpoint_map=self.endpoint_map.path,
            api_server=self._api_server,
        )
        image = str(container.get("image"))
        argv = podcontainers.run_argv(
            self.engine,
            name=f"kvtrace-{self.namespace}-{running.pod_name}-{container['name']}-{running.uid[:8]}",
            pod=running.pod,
            container=container,
            image=self.images.get(image, image),
            env_names=sorted(env),
            mounts=podcontainers.pod_mounts(
                running.pod, container, running.volumes, self.endpoint_map.path
            ),
            command=[rewrite(expand(a, container_env)) for a in container.get("command") or []],
            args=[rewrite(expand(a, container_env)) for a in container.get("args") or []],
            hosts=self._service_hosts,
        )
        return argv, podcontainers.engine_client_env(env, os.environ)

    def _start_kubernetes_service(self, kubeconfig: Path | str) -> None:
        """Container mode: the API server as a pod sees it: ``KUBERNETES_SERVICE_HOST``/
        ``_PORT`` (the kubeconfig's server, which its certificate names), and the
        ``kubernetes`` Service's names at a loopback address of this runner, port 443, relayed
        to that server (kopf dials ``https://kubernetes.default.svc`` by name)."""
        self._api_server = podcontainers.api_server_env(kubeconfig)
        address = self.allocator.allocate(f"kubernetes-service/{self._owner}")
        target = (
            self._api_server["KUBERNETES_SERVICE_HOST"],
            int(self._api_server["KUBERNETES_SERVICE_PORT"]),
        )
        self._kubernetes = podcontainers.ServiceForwarder((address, 443), target).start()
        self._service_hosts = dict.fromkeys(podcontainers.KUBERNETES_SERVICE_NAMES, address)

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
            process = self._process(running, cname).start()
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
                running.volumes[volume["name"]] = self.sources.volume_dir(
                    directory, volume, shared=self.engine is not None
                )
            running.rendered = self._render(running, names)
            write_files(running.volumes, running.rendered.files)
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
        write_files(running.volumes, rendered.files)
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

    def _process(self, running: _Running, cname: str) -> Process:
        """The (not yet started) process of one rendered container: in container mode the
        engine's client, whose stop also removes the container."""
        rendered = running.rendered
        assert rendered is not None
        log = self.workdir / "logs" / f"{running.pod_name}_{cname}.log"
        argv, env, cwd = rendered.argv[cname], rendered.env[cname], rendered.cwd[cname]
        name = f"{running.pod_name}/{cname}"
        if self.engine is None:
            return Process(name, argv, log, env=env, cwd=cwd)
        container = argv[argv.index("--name") + 1]
        return podcontainers.ContainerProcess(
            self.engine, container, name, argv, log, env=env, cwd=cwd
        )

    def _start_container(self, running: _Running, cname: str) -> None:
        rendered = running.rendered
        assert rendered is not None
        process = self._process(running, cname).start()
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
