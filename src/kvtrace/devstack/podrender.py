"""How a pod's processes are rendered on the host (development and tests only), for the pod
runner (:mod:`kvtrace.devstack.podrunner`): a :class:`PodRenderer` turns one pod, where it runs
(:class:`PodTarget`: its loopback address, directory and volume directories) and the endpoint
map's names into a :class:`Rendered`: each container's argv, environment and working
directory (a host process's, or in container mode the ``ENGINE run`` command of
:mod:`kvtrace.devstack.podcontainers`), its init containers' order, the volumes' files, and every
name met with where the map sends it (so the runner notices a change). Names and rewrites are
:mod:`kvtrace.devstack.podnames`, what the pod refers to in the API
:mod:`kvtrace.devstack.podsources`. Starts nothing; imports nothing of the KV node, and of the
operator only its image names (:func:`agent_image_roots`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kvtrace.devstack import podcontainers, tools
from kvtrace.devstack.podnames import Rewriter, expand, is_service_address
from kvtrace.devstack.podsources import PodSources
from kvtrace.devstack.proc import no_proxy_env
from kvtrace.shared import endpoints as endpoints_mod

Obj = dict[str, Any]
CommandResolver = Callable[[Obj, Obj], Sequence[str] | None]

# requests lets these override the OTLP exporter's CA file (docs/security.md, TLS); a pod has
# neither, so a process run as a pod must not inherit them from the host.
HOST_CA_OVERRIDES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


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
class Rendered:
    """What a pod's processes get, after every rewrite, with the current endpoint map."""

    argv: dict[str, list[str]]  # container -> argv (executable resolved)
    env: dict[str, dict[str, str]]  # container -> environment
    cwd: dict[str, Path]
    init: list[str]  # init containers (in argv/env/cwd too), in the order they run
    files: dict[str, dict[str, bytes]]  # volume -> relative path -> content
    names: dict[str, str | None]  # every host:port in argv/env -> where the map sends it


@dataclasses.dataclass(frozen=True)
class PodTarget:
    """Where one pod runs on the host: its loopback ``address``, its ``directory`` and its
    volumes' local directories (volume name -> directory)."""

    pod: Obj
    address: str
    directory: Path
    volumes: Mapping[str, Path]

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])


class PodRenderer:
    """Renders the pods of ``namespace`` (their selected ``containers``; None: all) as processes
    on the host, or with ``engine`` set as containers of their images (``images`` maps a
    rendered image to a local one); ``extra_env`` has the last word on their variables;
    ``resolve_command`` gives the command of a container that names none and ``image_roots``
    stand for images' files (process mode). ``api_server`` and ``service_hosts`` are what
    container mode gives each container of the API server (``KUBERNETES_SERVICE_*``; the
    ``kubernetes`` Service's names -> a local address), set by the runner."""

    def __init__(
        self,
        sources: PodSources,
        namespace: str,
        endpoint_map: endpoints_mod.EndpointMapFile,
        *,
        kubeconfig: Path | str | None = None,
        extra_env: Mapping[str, str] | None = None,
        containers: Iterable[str] | None = None,
        resolve_command: CommandResolver | None = None,
        engine: str | None = None,
        images: Mapping[str, str] | None = None,
        image_roots: Mapping[str, Path] | None = None,
    ) -> None:
        self.sources = sources
        self.namespace = namespace
        self.endpoint_map = endpoint_map
        self.kubeconfig = kubeconfig
        self.extra_env = dict(extra_env or {})
        self.containers = set(containers) if containers is not None else None
        self.resolve_command = resolve_command
        self.engine = engine
        self.images = dict(images or {})
        self.image_roots = dict(image_roots or {})
        self.api_server: dict[str, str] = {}
        self.service_hosts: dict[str, str] = {}
        # A headless Service's pod name -> its pod's address (podnames.headless_pod_dns), set by
        # the runner from the namespace's Services at each pass.
        self.pod_dns: Callable[[str], str | None] | None = None
        # resolve_command's answers per (pod uid, container, image): pods are re-rendered every
        # poll, and a callback may be costly (tools.binary checksums the binary at each call).
        self._commands: dict[tuple[str, str, str], list[str]] = {}

    def _selected(self, pod: Obj) -> list[Obj]:
        return [
            c
            for c in pod["spec"].get("containers") or []
            if self.containers is None or c["name"] in self.containers
        ]

    def render(self, target: PodTarget, names: Mapping[str, str]) -> Rendered:
        """Everything the pod's processes get; raises LookupError while a referenced object is missing."""
        pod = target.pod
        kwok_ip = (pod.get("status") or {}).get("podIP")
        seen: dict[str, str | None] = {}
        # Files are refreshed in place, as the kubelet does. A pod's name in them is never a
        # reason to restart (a node re-reading its peers file must keep running when the
        # membership changes); a Service's name is, as in arguments and environment: a program
        # reads its configuration once (the collector's exporter to Jaeger's Service), and in a
        # cluster that name resolves from the Service's creation, before any backend runs.
        file_names: dict[str, str | None] = {}
        pod_rewrite = Rewriter(
            self._mounts(target, pod["spec"].get("containers") or []),
            target.address,
            kwok_ip,
            names,
            file_names,
            self.pod_dns,
        )
        files: dict[str, dict[str, bytes]] = {}
        for volume in pod["spec"].get("volumes") or []:
            content = self.sources.volume_files(pod, target.address, volume)
            if content is not None and "secret" in volume:
                content = self.sources.serving_files(content, target.address)
            if content is not None:
                files[volume["name"]] = {
                    rel: pod_rewrite.text(data) for rel, data in content.items()
                }
        seen.update({k: v for k, v in file_names.items() if is_service_address(k)})
        rendered = Rendered({}, {}, {}, [], files, seen)
        rendered.init = [c["name"] for c in pod["spec"].get("initContainers") or []]
        for container in [*(pod["spec"].get("initContainers") or []), *self._selected(pod)]:
            cname = container["name"]
            container_env = self.sources.env(pod, container, target.address)
            if self.engine is not None:  # containers see their volumes at the real paths
                rewrite = Rewriter([], target.address, kwok_ip, names, seen, self.pod_dns)
                rendered.argv[cname], rendered.env[cname] = self._container_run(
                    target, container, container_env, rewrite
                )
                rendered.cwd[cname] = target.directory
                continue
            rewrite = Rewriter(
                self._mounts(target, [container]) + self._image_mounts(container),
                target.address,
                kwok_ip,
                names,
                seen,
                self.pod_dns,
            )
            rendered.argv[cname] = self._process_argv(pod, container, container_env, rewrite)
            rendered.env[cname] = self._process_env(target, container_env, rewrite)
            workdir = container.get("workingDir")
            cwd = Path(rewrite(workdir)) if workdir else target.directory
            rendered.cwd[cname] = cwd if cwd.is_dir() else target.directory
        return rendered

    def _mounts(self, target: PodTarget, containers: Iterable[Obj]) -> list[tuple[str, Path]]:
        """Process mode: ``(mountPath, local directory)`` of the containers' volume mounts,
        longest path first (container mode mounts them at the real paths: none)."""
        if self.engine is not None:
            return []
        found = {
            m["mountPath"].rstrip("/") or "/": target.volumes[m["name"]] / m.get("subPath", "")
            for c in containers
            for m in c.get("volumeMounts") or []
            if m["name"] in target.volumes
        }
        return sorted(found.items(), key=lambda item: -len(item[0]))

    def _process_argv(
        self, pod: Obj, container: Obj, container_env: Mapping[str, str], rewrite: Rewriter
    ) -> list[str]:
        """Process mode: the container's argv, rewritten, its executable resolved on the host."""
        raw = self.argv(pod, container)
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
        self, target: PodTarget, container_env: Mapping[str, str], rewrite: Rewriter
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
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        env.update({k: rewrite(v) for k, v in container_env.items()})
        env.update(self.extra_env)
        env.update(
            {
                endpoints_mod.ENV: str(self.endpoint_map.path),
                "HOSTNAME": target.name,
                "KVTRACE_POD_ADDRESS": target.address,
            }
        )
        return env

    def _container_run(
        self, target: PodTarget, container: Obj, container_env: dict[str, str], rewrite: Rewriter
    ) -> tuple[list[str], dict[str, str]]:
        """Container mode: the ``ENGINE run`` argv of one container and the engine client's
        environment (the container's variables ride in it, passed by name)."""
        assert self.engine is not None
        env = podcontainers.container_env(
            {**{k: rewrite(v) for k, v in container_env.items()}, **self.extra_env},
            pod_name=target.name,
            address=target.address,
            endpoint_map=self.endpoint_map.path,
            api_server=self.api_server,
        )
        image = str(container.get("image"))
        argv = podcontainers.run_argv(
            self.engine,
            name=f"kvtrace-{self.namespace}-{target.name}-{container['name']}-{target.uid[:8]}",
            pod=target.pod,
            container=container,
            image=self.images.get(image, image),
            env_names=sorted(env),
            mounts=podcontainers.pod_mounts(
                target.pod, container, target.volumes, self.endpoint_map.path
            ),
            command=[rewrite(expand(a, container_env)) for a in container.get("command") or []],
            args=[rewrite(expand(a, container_env)) for a in container.get("args") or []],
            hosts=self.service_hosts,
        )
        return argv, podcontainers.engine_client_env(env, os.environ)

    def _image_mounts(self, container: Obj) -> list[tuple[str, Path]]:
        """What stands for the files of the container's image: each top-level entry of its
        ``image_roots`` directory at ``/ENTRY``."""
        root = self.image_roots.get(str(container.get("image")))
        if root is None or not root.is_dir():
            return []
        return [(f"/{entry.name}", entry) for entry in sorted(root.iterdir())]

    def argv(self, pod: Obj, container: Obj) -> list[str] | None:
        argv = list(container.get("command") or [])
        if not argv and self.resolve_command is not None:
            key = (pod["metadata"]["uid"], container["name"], str(container.get("image")))
            argv = list(self._commands.get(key) or self.resolve_command(pod, container) or [])
            if argv:  # no answer (or an exception) is asked again next pass
                self._commands[key] = argv
        if not argv:
            return None
        return argv + list(container.get("args") or [])
