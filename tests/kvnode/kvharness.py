"""A harness that runs real `kvtrace node serve` processes on 127.0.x.y loopback addresses."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
_subnets = itertools.count(10)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 10,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class Node:
    def __init__(self, harness: Harness, node_id: str, ip: str):
        self.harness, self.id, self.ip = harness, node_id, ip
        self.client_port = free_port(ip)
        self.peer_port = free_port(ip)
        self.data_dir = harness.root / node_id
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = harness.root / f"{node_id}.log"
        self.extra_env: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"{'https' if self.harness.tls else 'http'}://{self.ip}:{self.client_port}"

    def http(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float = 10,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """A request to this node with the harness's CA and token (``headers`` win)."""
        h = self.harness
        auth = {"Authorization": f"Bearer {h.token}"} if h.token else {}
        return http(method, self.url + path, body, timeout, {**auth, **(headers or {})}, h.tls)

    @property
    def peer(self) -> str:
        return f"{self.id}={self.ip}:{self.peer_port}"

    def start(self, wait: bool = True) -> Node:
        h = self.harness
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "KVNODE_"))},
            "OTEL_SDK_DISABLED": "true",
            **h.env,
            **self.extra_env,
            "KVNODE_ID": self.id,
            "KVNODE_CLIENT_ADDR": f"{self.ip}:{self.client_port}",
            "KVNODE_PEER_ADDR": f"{self.ip}:{self.peer_port}",
            "KVNODE_DATA_DIR": str(self.data_dir),
            "KVNODE_PEERS_FILE": str(h.peers_file_of(self)),
        }
        cmd = [str(BIN / "kvtrace"), "node", "serve"]
        if env.get("OTEL_SDK_DISABLED") != "true":
            cmd = [str(BIN / "opentelemetry-instrument"), *cmd]
            env["OTEL_RESOURCE_ATTRIBUTES"] = f"service.instance.id={self.id}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.id} exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            return self.http("GET", "/readyz", timeout=2)[0] == 200

        wait_until(ready, timeout, what=f"{self.id} ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def wipe(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- client helpers ---------------------------------------------------------------
    def put(
        self, key: str, value: bytes, consistency: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return self.http("PUT", self.kv_path(key, consistency), value)

    def get(self, key: str, consistency: str | None = None) -> tuple[int, dict[str, str], bytes]:
        return self.http("GET", self.kv_path(key, consistency))

    def delete(self, key: str, consistency: str | None = None) -> tuple[int, dict[str, str], bytes]:
        return self.http("DELETE", self.kv_path(key, consistency))

    def kv_url(self, key: str, consistency: str | None) -> str:
        return self.url + self.kv_path(key, consistency)

    @staticmethod
    def kv_path(key: str, consistency: str | None) -> str:
        path = f"/v1/kv/{urllib.request.quote(key, safe='')}"
        return path + (f"?consistency={consistency}" if consistency else "")

    def cluster(self) -> dict[str, Any]:
        return json.loads(self.http("GET", "/v1/cluster")[2])  # type: ignore[no-any-return]

    def metric(self, name: str) -> float:
        text = self.http("GET", "/metrics")[2].decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#") and line[len(name)] in " {"
        )


class Harness:
    def __init__(self, root: Path, env: dict[str, str], own_peers_files: bool = False):
        self.root = root
        self.env = env
        self.own_peers_files = own_peers_files
        self.subnet = next(_subnets)
        self.peers_file = root / "peers"
        self.nodes: list[Node] = []
        # Set by a test that gives the nodes KVNODE_TLS_* and KVNODE_AUTH_TOKEN_DIR.
        self.tls: ssl.SSLContext | None = None
        self.token: str | None = None

    def add(self, count: int) -> list[Node]:
        new = [
            Node(
                self, f"kv-{len(self.nodes) + i}", f"127.0.{self.subnet}.{len(self.nodes) + i + 2}"
            )
            for i in range(count)
        ]
        self.nodes += new
        return new

    def peers_file_of(self, node: Node) -> Path:
        """The shared peers file, or with `own_peers_files` one per node (like pods that see
        a ConfigMap update at different times)."""
        return self.root / f"peers-{node.id}" if self.own_peers_files else self.peers_file

    def write_peers(self, nodes: list[Node], to: list[Node] | None = None) -> None:
        """Write the member list: to every node's file, or with `to` only to those nodes'
        files (with `own_peers_files`; otherwise there is one shared file)."""
        text = "\n".join(n.peer for n in nodes) + "\n"
        paths = {self.peers_file} if not self.own_peers_files else set()
        if self.own_peers_files:
            paths.update(self.peers_file_of(n) for n in (self.nodes if to is None else to))
        for path in paths:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def start(self, count: int) -> list[Node]:
        nodes = self.add(count)
        self.write_peers(self.nodes)
        for n in nodes:
            n.start(wait=False)
        for n in nodes:
            n.wait_ready()
        return nodes

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()


def write_keys(node: Node, prefix: str, count: int, level: str = "quorum") -> dict[str, bytes]:
    written = {}
    for i in range(count):
        key, value = f"{prefix}/{i}", f"value-{i}".encode()
        status, _, body = node.put(key, value, level)
        assert status == 204, body
        written[key] = value
    return written


def all_readable(node: Node, data: dict[str, bytes], level: str) -> bool:
    return all(node.get(k, level)[2] == v for k, v in data.items())
