"""Child processes of the local stack: own process group, log file, clean stop, log tail.

Every upstream program (etcd, kube-apiserver, the collector, ...) and every process the pod
runner starts goes through :class:`Process`, so one place guarantees what the harness promises:
a component that dies is reported with the tail of its log, and ``stop()`` leaves nothing behind
(the whole process group is signalled, then killed).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


class StartupError(RuntimeError):
    """A component did not become healthy; the message carries its log tail."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # If the harness itself is killed (SIGKILL from a CI timeout), take the child along.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the caller retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


def urlopen_direct(
    url: str | urllib.request.Request, *, timeout: float, context: ssl.SSLContext | None = None
) -> Any:
    """``urlopen`` that never goes through an HTTP(S)_PROXY: the stack lives on loopback."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(url, timeout=timeout)


# Added to NO_PROXY for the processes the harness starts (Go and requests understand CIDRs).
NO_PROXY = "127.0.0.0/8,localhost,.svc,.cluster.local"


def no_proxy_env(env: dict[str, str]) -> dict[str, str]:
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(filter(None, [env.get(key, ""), NO_PROXY]))
    return env


KEEP_ENV = "KVTRACE_KEEP_WORKDIRS"


def keep_workdirs() -> bool:
    """``KVTRACE_KEEP_WORKDIRS=1``: leave temp dirs (logs, data) behind for debugging."""
    return os.environ.get(KEEP_ENV, "") not in ("", "0", "false", "no")


ADDRESS_IN_USE = ("address already in use", "eaddrinuse")


class Process:
    """One child process in its own process group, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def failed_to_bind(self) -> bool:
        text = self.tail(80).lower()
        return any(marker in text for marker in ADDRESS_IN_USE)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``; reap."""
        if self.popen is None:
            return
        pgid = self.popen.pid
        for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self.popen.poll()  # reap the leader so it does not linger as a zombie
                if not processes_in_group(pgid):
                    return
                time.sleep(0.05)

    def describe_failure(self, what: str) -> str:
        state = f"exited with {self.returncode}" if not self.alive() else "still running"
        return f"{self.name} {what} ({state}); log {self.log_path}:\n{self.tail()}"


def processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # fields: state ppid pgrp ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            )
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    process: Process | None = None,
    interval: float = 0.1,
) -> T:
    """Poll ``check`` until it returns a truthy value; fail early if ``process`` dies."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - reported below with the log tail
            last_error = exc
        if process is not None and not process.alive():
            raise StartupError(process.describe_failure(f"died before {what}"))
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            if process is not None:
                raise StartupError(
                    process.describe_failure(f"not {what} after {timeout:.0f}s{detail}")
                )
            raise StartupError(f"not {what} after {timeout:.0f}s{detail}")
        time.sleep(interval)


def start_with_port_retry(
    make: Callable[[], Process],
    ready: Callable[[Process], object],
    *,
    timeout: float,
    what: str,
    attempts: int = 3,
) -> Process:
    """Start a process on freshly chosen ports; if it dies on a port clash, choose again."""
    for attempt in range(attempts):
        proc = make().start()
        try:
            wait_until(lambda: ready(proc), timeout=timeout, what=what, process=proc)  # noqa: B023 - this round's
            if not proc.alive():  # a namesake on the clashing port may have answered for it
                raise StartupError(proc.describe_failure(f"died after looking {what}"))
            return proc
        except StartupError:
            clash = not proc.alive() and proc.failed_to_bind()
            proc.stop()
            if clash and attempt + 1 < attempts:
                continue
            raise
    raise AssertionError("unreachable")


class ProcessGroup:
    """Processes stopped together, in reverse start order; thread-safe."""

    def __init__(self) -> None:
        self._procs: list[Process] = []
        self._lock = threading.Lock()

    def add(self, proc: Process) -> Process:
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop_all(self) -> None:
        with self._lock:
            procs, self._procs = self._procs[::-1], []
        for proc in procs:
            proc.stop()

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs if p.pid]
