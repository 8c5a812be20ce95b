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
  ``ROOT/autoinstrumentation``; ``podrender.agent_image_roots`` gives the injection agents').

Container mode (``engine=`` docker or podman, the ``containers`` test tier): each container
runs as a real container of its image (``images`` maps a rendered image to a local one) with
exactly the rendered command (none: the image's entrypoint), args, environment and security
context, on the host network and the pod's loopback address as above; volumes are the same
local directories, bind-mounted at their ``mountPath`` (so paths are not rewritten), the
endpoint map's directory is mounted read-only, a projected ServiceAccount token is a
TokenRequest token of the pod's ServiceAccount bound to the pod, and the API server is
``KUBERNETES_SERVICE_HOST``/``_PORT`` as the kubelet sets them
(:mod:`kvtrace.devstack.podcontainers`).

How a pod's containers are rendered (argv, environment, working directory, files) is
:mod:`kvtrace.devstack.podrender`; what the pods refer to in the API (environment sources,
volume files, tokens) is read by :mod:`kvtrace.devstack.podsources`; names, addresses and
rewrites are the pure functions of :mod:`kvtrace.devstack.podnames`. This module follows the
pods and starts, restarts and stops their processes.

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
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kvtrace.devstack import podcontainers
from kvtrace.devstack.podnames import (
    container_ports,
    endpoint_entries,
    headless_pod_dns,
    parse_selector,
)
from kvtrace.devstack.podrender import CommandResolver, PodRenderer, PodTarget, Rendered
from kvtrace.devstack.podsources import PodSources, to_dict, write_files
from kvtrace.devstack.proc import Process, StartupError, keep_workdirs, port_open, wait_until
from kvtrace.shared import endpoints as endpoints_mod

Obj = dict[str, Any]


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


@dataclasses.dataclass
class _Running:
    pod_name: str
    uid: str
    address: str
    pod: Obj
    directory: Path
    restart_policy: str
    volumes: dict[str, Path] = dataclasses.field(default_factory=dict)
    rendered: Rendered | None = None
    processes: dict[str, Process] = dataclasses.field(default_factory=dict)
    restarts: dict[str, int] = dataclasses.field(default_factory=dict)
    next_restart: dict[str, float] = dataclasses.field(default_factory=dict)
    stale: str | None = None  # why its files could not be refreshed (an object is gone)


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
        self.containers = set(containers) if containers is not None else None
        self.poll_interval = poll_interval
        self.restart_delay = restart_delay
        self.engine = engine  # container mode when set
        self.errors: dict[str, str] = {}  # pod uid -> why its processes could not start
        self._owner = f"podrunner/{namespace}/{selector}/{id(self)}"
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self.sources = PodSources(cluster, namespace, self.workdir, self._note)
        self.renderer = PodRenderer(
            self.sources,
            namespace,
            self.endpoint_map,
            kubeconfig=getattr(cluster, "kubeconfig", None),
            extra_env=env,
            containers=containers,
            resolve_command=resolve_command,
            engine=engine,
            images=images,
            image_roots=image_roots,
        )
        # Container mode: the kubernetes Service's relay (kube-proxy's job).
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
            services = self._list("Service")
            self.endpoint_map.update(
                self._owner,
                endpoint_entries(self.namespace, list(wanted.values()), services, self.address),
            )
            self.renderer.pod_dns = headless_pod_dns(self.namespace, services, self.address)
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
    def _start_kubernetes_service(self, kubeconfig: Path | str) -> None:
        """Container mode: the API server as a pod sees it: ``KUBERNETES_SERVICE_HOST``/
        ``_PORT`` (the kubeconfig's server, which its certificate names), and the
        ``kubernetes`` Service's names at a loopback address of this runner, port 443, relayed
        to that server (kopf dials ``https://kubernetes.default.svc`` by name)."""
        api_server = podcontainers.api_server_env(kubeconfig)
        address = self.allocator.allocate(f"kubernetes-service/{self._owner}")
        target = (api_server["KUBERNETES_SERVICE_HOST"], int(api_server["KUBERNETES_SERVICE_PORT"]))
        self._kubernetes = podcontainers.ServiceForwarder((address, 443), target).start()
        self.renderer.api_server = api_server
        self.renderer.service_hosts = dict.fromkeys(podcontainers.KUBERNETES_SERVICE_NAMES, address)

    def _render(self, running: _Running, names: Mapping[str, str]) -> Rendered:
        """What the pod's processes get where it runs (raises LookupError while an object it
        refers to is missing)."""
        target = PodTarget(running.pod, running.address, running.directory, running.volumes)
        return self.renderer.render(target, names)

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
        environment now maps elsewhere (typically: another runner started running its target).
        An object the running pod refers to that is gone (its owner's deletion removes the
        ConfigMaps and Secrets before the pods) leaves it running on what it had, as the
        kubelet does: said once in the log, not a start problem."""
        try:
            rendered = self._render(running, names)
        except LookupError as exc:
            if running.stale != str(exc):
                self._note(f"{running.pod_name}: keeps running on its last files: {exc}")
            running.stale = str(exc)
            self._restart_exited(running)
            return
        running.stale = None
        write_files(running.volumes, rendered.files)
        previous, running.rendered = running.rendered, rendered
        changed = sorted(
            k for k, v in (previous.names if previous else {}).items() if rendered.names.get(k) != v
        )
        # A container that has terminated for good (restartPolicy Never, or OnFailure after
        # success: a finished bench) is never run again, as under a kubelet.
        if changed and not all(self._finished(running, c) for c in running.processes):
            self._note(f"{running.pod_name}: endpoints {changed} changed; restarting its processes")
            self._stop_pod(running)
            for cname in rendered.argv:
                if cname not in rendered.init:
                    self._start_container(running, cname)
            return
        self._restart_exited(running)

    @staticmethod
    def _finished(running: _Running, cname: str) -> bool:
        """The container exited and its pod's restartPolicy does not run it again."""
        code = running.processes[cname].returncode
        if code is None:
            return False
        return running.restart_policy == "Never" or (
            running.restart_policy == "OnFailure" and code == 0
        )

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
            if code is None or self._finished(running, cname):
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
