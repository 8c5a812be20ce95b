"""A pod's names and addresses on the host (development and tests only), pure functions: the
endpoint map's entries for a namespace's pods and Services (:func:`endpoint_entries`), Kubernetes
``$(VAR)`` expansion (:func:`expand`) and the :class:`Rewriter` of one pod's arguments,
environment and files (wildcard and pod addresses to the pod's loopback address, names the map
knows to their addresses, mount paths to local directories). The pod runner
(:mod:`kvtrace.devstack.podrunner`) uses them; imports nothing of the operator, the KV node or
the API client.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

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


_HOST_PORT = re.compile(
    r"(?<![\w.-])((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?):(\d{1,5})(?![\d])"
)


class Rewriter:
    """Rewrite one argument, env value or mounted file for the host: mount paths → local
    directories, ``0.0.0.0``/``[::]``/the KWOK pod IP/an empty host (``--flag=:PORT``) → the
    pod's loopback address, and ``host:port`` that the endpoint map knows → its address.
    Every ``host:port`` met is recorded in ``seen`` with its mapped address (or None), so a
    change is noticed."""

    def __init__(
        self,
        mounts: list[tuple[str, Path]],
        address: str,
        kwok_ip: str | None,
        names: Mapping[str, str] | None = None,
        seen: dict[str, str | None] | None = None,
        pod_dns: Callable[[str], str | None] | None = None,
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
        # A listen address with no host (Go's ``:9090``: every interface of the pod), as the
        # whole value or after ``=`` (``--web.listen-address=:9090``), is the pod's address too.
        self.empty_host = re.compile(r"(^|=):(\d{1,5})$")
        self.address = address
        self.names = names or {}
        self.seen = seen if seen is not None else {}
        self.pod_dns = pod_dns

    def _name(self, match: re.Match[str]) -> str:
        key = f"{match.group(1).lower()}:{match.group(2)}"
        target = self.names.get(key) or (self.pod_dns(key) if self.pod_dns else None)
        self.seen[key] = target
        return target or match.group(0)

    def __call__(self, value: str) -> str:
        value = self.wildcard.sub(_literal(self.address), value)
        value = self.empty_host.sub(lambda m: f"{m.group(1)}{self.address}:{m.group(2)}", value)
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


# A Service's DNS name with a port (``SERVICE.NAMESPACE.svc[.cluster.local]:PORT``): one label
# before the namespace, where a pod's name under a headless Service has two
# (``HOSTNAME.SUBDOMAIN.NAMESPACE.svc...``).
_SERVICE_ADDRESS = re.compile(
    r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\.[a-z0-9]([a-z0-9-]*[a-z0-9])?\.svc(\.cluster\.local)?:\d+$"
)


def is_service_address(key: str) -> bool:
    """Whether ``key`` (``host:port``, lower case, as :class:`Rewriter` records it) names a
    Service (``SERVICE.NAMESPACE.svc[.cluster.local]:PORT``) rather than one pod (a peer's
    ``HOSTNAME.SUBDOMAIN.NAMESPACE.svc...``) or an address."""
    return bool(_SERVICE_ADDRESS.match(key))


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement that inserts ``text`` verbatim (no backslash processing)."""
    return lambda _match: text


def container_ports(pod: Obj, only: set[str] | None) -> list[Obj]:
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
    for port in container_ports(pod, None):
        if port.get("name") == target:
            return int(port["containerPort"])
    return None


def parse_selector(text: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
    return {k.strip(): v.strip() for k, v in pairs}


def headless_pod_dns(
    namespace: str, services: list[Obj], address: Callable[[str], str]
) -> Callable[[str], str | None]:
    """``HOSTNAME.SUBDOMAIN[.NS[.svc[.cluster.local]]]:PORT`` under one of the namespace's
    headless Services (lower case, as :class:`Rewriter` records it) -> the address the pod
    HOSTNAME has or will have (``address`` is sticky per pod name), else None. A StatefulSet's
    peers file names members before their pods exist (OrderedReady starts them one by one); in a
    cluster that name is the same before and after the pod starts, so here its rewrite must be
    too, or a member would see its peers' addresses change as a membership change."""
    headless = {
        svc["metadata"]["name"]
        for svc in services
        if (svc.get("spec") or {}).get("clusterIP") == "None"
    }
    suffixes: tuple[list[str], ...] = (
        [],
        [namespace],
        [namespace, "svc"],
        [namespace, "svc", "cluster", "local"],
    )

    def lookup(key: str) -> str | None:
        host, _, port = key.rpartition(":")
        labels = host.split(".")
        if len(labels) < 2 or labels[1] not in headless or labels[2:] not in suffixes:
            return None
        return f"{address(labels[0])}:{port}"

    return lookup


def endpoint_entries(
    namespace: str, pods: list[Obj], services: list[Obj], address: Callable[[str], str]
) -> dict[str, str]:
    """The endpoint map's entries for ``pods`` (each at ``address(pod name)``) and the
    ``services`` that select them: every name a pod or Service is reached by (pod name, KWOK
    pod IP, ``HOSTNAME.SUBDOMAIN[.NS[.svc[.cluster.local]]]``, Service name forms and cluster
    IP), with each port, to ``ADDRESS:PORT`` (a Service to its first backend, by name)."""
    ns = namespace
    entries: dict[str, str] = {}
    wanted = sorted(pods, key=lambda p: p["metadata"]["name"])
    for pod in wanted:
        spec, name = pod["spec"], pod["metadata"]["name"]
        ports = [p["containerPort"] for p in container_ports(pod, None)]
        hosts = [name]
        kwok_ip = (pod.get("status") or {}).get("podIP")
        if kwok_ip:
            hosts.append(kwok_ip)
        if spec.get("subdomain"):
            base = f"{spec.get('hostname') or name}.{spec['subdomain']}"
            hosts += [base, f"{base}.{ns}", f"{base}.{ns}.svc", f"{base}.{ns}.svc.cluster.local"]
        for host in hosts:
            for port in ports:
                entries[f"{host}:{port}"] = f"{address(name)}:{port}"
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
                    f"{address(backends[0]['metadata']['name'])}:{target}"
                )
    return entries
