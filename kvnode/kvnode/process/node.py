"""Wire a node together and run it until SIGTERM/SIGINT (then shut down gracefully)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from kvnode import implementation, telemetry
from kvnode.faults import cut_off, partitions_file, protocol_versions
from kvnode.metrics import Metrics
from kvnode.process.config import Config
from kvnode.replication.antientropy import anti_entropy_round
from kvnode.replication.catchup import catch_up
from kvnode.replication.cluster import Cluster, Settings
from kvnode.replication.coordinator import Coordinator
from kvnode.replication.handoff import replay_hints
from kvnode.replication.hlc import LOGICAL_BITS
from kvnode.replication.rebalance import change_members, ensure_driver, exchange_status
from kvnode.replication.replica import Replica
from kvnode.replication.ring import PeersError, parse_peers
from kvnode.storage.engine import Store
from kvnode.transport import frames
from kvnode.transport.credentials import Credentials, TlsFiles
from kvnode.transport.http_api import ApiState, build_handler
from kvnode.transport.http_server import HttpServer
from kvnode.transport.peer_client import PeerClient
from kvnode.transport.peer_server import PeerServer
from kvnode.transport.validation import Limits

log = logging.getLogger("kvnode")


def read_peers_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        log.warning("cannot read peers file %s: %s", path, exc)
        return None


class CredentialsError(Exception):
    """The TLS files or the token directory do not load (the message names the flag)."""


def load_credentials(config: Config) -> Credentials:
    files = (
        TlsFiles(config.tls_cert_file, config.tls_key_file, config.tls_ca_file)
        if config.tls_cert_file
        else None
    )
    try:
        return Credentials(files, config.auth_token_dir or None)
    except OSError as exc:  # ssl.SSLError included
        where = (
            "--auth-token-dir " + config.auth_token_dir
            if files is None or exc.filename == config.auth_token_dir
            else "--tls-cert-file/--tls-key-file/--tls-ca-file"
        )
        raise CredentialsError(f"{where}: {exc}") from None


class Node:
    def __init__(self, config: Config):
        self.config = config
        self.credentials = load_credentials(config)
        self.metrics = Metrics()
        self.store = Store(
            config.data_dir,
            config.fsync_policy,
            config.group_commit_window,
            config.cache_size,
            on_commit=self.metrics.fsync.observe,
        )
        self.versions = protocol_versions(config.faults, frames.PROTOCOL)
        self.peer_client = PeerClient(
            timeout=config.peer_timeout,
            max_frame=self.max_frame,
            tls=lambda: self.credentials.peer_client,
            node_id=config.id,
            versions=self.versions,
            metrics=self.metrics,
        )
        settings = Settings(
            node_id=config.id,
            replication_factor=config.replication_factor,
            vnodes=config.vnodes,
            hinted_handoff=config.hinted_handoff,
            hint_interval=config.hint_interval,
            anti_entropy_interval=config.anti_entropy_interval,
            tombstone_grace=config.tombstone_grace,
        )
        self.cluster = Cluster(settings, config.peers, self.store, self.peer_client, self.metrics)
        self.replica = Replica(self.cluster)
        self.limits = Limits(config.max_key_size, config.max_value_size)
        self.api = ApiState(
            self.cluster,
            Coordinator(self.cluster),
            self.metrics,
            self.limits,
            config.consistency,
            config.faults,
            self.credentials,
        )
        self.metrics.gauge(
            "kvnode_hints_pending",
            "Hints waiting for their replica.",
            lambda: {(t,): float(n) for t, n in self.store.hint_counts().items()},
            ("peer",),
        )
        self.metrics.gauge(
            "kvnode_ring_members",
            "Members in this node's ring.",
            lambda: {(): float(len(self.cluster.ring.members))},
        )
        self.metrics.gauge(
            "kvnode_caught_up",
            "1 once no peer held hints for this node after its start (/readyz).",
            lambda: {(): float(self.cluster.caught_up)},
        )
        self.metrics.gauge(
            "kvnode_credentials_reloads_total",
            "TLS files or client tokens re-read after a change.",
            lambda: {(): float(self.credentials.reloads)},
            kind="counter",
        )
        self.metrics.span_export(telemetry.stats)
        self._peers_text: str | None = None

    @property
    def max_frame(self) -> int:
        return max(16 * 1024 * 1024, 4 * (self.config.max_value_size + self.config.max_key_size))

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        http = HttpServer(
            build_handler(self.api),
            max_body=cfg.max_value_size,
            max_line=max(8190, 3 * cfg.max_key_size + 1024),
        )
        peer_server = PeerServer(
            self.replica,
            self.metrics,
            cfg.max_key_size,
            cfg.max_value_size,
            self.max_frame,
            self.versions,
        )
        loop = asyncio.get_running_loop()
        creds = self.credentials
        server = await loop.create_server(
            peer_server.protocol,
            cfg.peer_host,
            cfg.peer_port,
            reuse_address=True,
            ssl=creds.listening(peer=True),
        )
        await self._join_change_in_progress()
        client_server = await loop.create_server(
            http.protocol,
            cfg.client_host,
            cfg.client_port,
            reuse_address=True,
            ssl=creds.listening(peer=False),
        )
        self._start_background()
        log.info(
            "kvnode %s serving clients on %s:%d, peers on %s:%d, %d members, tracing %s, TLS %s, "
            "client tokens %s, hot path %s",
            cfg.id,
            cfg.client_host,
            cfg.client_port,
            cfg.peer_host,
            cfg.peer_port,
            len(self.cluster.ring.members),
            ("on, retroactive" if telemetry.RETRO is not None else "on")
            if telemetry.ENABLED
            else "off",
            "on (mutual between peers)" if creds.tls else "off",
            f"required ({len(creds.tokens)} client(s))" if creds.auth else "off",
            implementation.active(),
        )
        await stop.wait()
        log.info("shutting down")
        self.api.ready = False
        await self.cluster.stop()
        client_server.close()  # stop accepting; in-flight requests finish (bounded)
        await http.shutdown(cfg.shutdown_timeout)
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), cfg.shutdown_timeout)
        except TimeoutError:
            log.warning(
                "peer connections still open after %gs; closing anyway", cfg.shutdown_timeout
            )
        self.peer_client.close()
        self.store.close()
        log.info("stopped")

    async def _join_change_in_progress(self) -> None:
        """Before serving clients, ask the members whether a membership change is going on
        (a member restarted in the middle of one takes its phase and old ring from them)."""
        c = self.cluster
        try:
            await asyncio.wait_for(exchange_status(c, c.view), min(self.config.peer_timeout, 2.0))
        except TimeoutError:
            log.warning("no membership status from the peers before serving; learning it later")
        # members starting together refuse each other's first calls: that must not make the
        # first client requests fail fast as if those peers were down
        self.peer_client.forget_failures()
        ensure_driver(c)

    def _start_background(self) -> None:
        c = self.cluster
        cfg = self.config
        # Ready only once no peer holds hints for this node (a roll waits for it).
        c.spawn(catch_up(c, interval=min(0.5, cfg.hint_interval), timeout=cfg.catch_up_timeout))
        if cfg.hinted_handoff:
            c.every(lambda: cfg.hint_interval, lambda: replay_hints(c))
        if cfg.anti_entropy_interval > 0:
            # First round soon after start, so a node with a wiped data dir recovers quickly.
            c.every(
                _jitter(cfg.anti_entropy_interval),
                lambda: anti_entropy_round(c, self.replica),
                first=min(1.0, cfg.anti_entropy_interval),
            )
        c.every(lambda: max(1.0, cfg.tombstone_grace / 4), self._purge_tombstones)
        if telemetry.RETRO is not None:
            c.every(lambda: 1.0, self._expire_traces)
        if self.credentials.tls is not None or self.credentials.auth:
            c.every(lambda: cfg.reload_interval, self._refresh_credentials)
        if partitions_file(cfg.faults):
            c.every(lambda: 0.1, self._check_partitions, first=0)
        if cfg.peers_file:
            self._peers_text = read_peers_file(cfg.peers_file)
            c.every(lambda: cfg.peers_file_interval, self._check_peers_file)

    async def _expire_traces(self) -> None:
        telemetry.expire_traces()

    async def _refresh_credentials(self) -> None:
        self.credentials.refresh()

    async def _check_partitions(self) -> None:
        """Test faults only: the members this node's peer calls to fail (a partitions file)."""
        try:
            with open(partitions_file(self.config.faults), encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            text = ""
        cut = cut_off(text, self.config.id)
        if cut != self.peer_client.cut_off:
            log.warning(
                "test fault: peer calls to %s fail (partitions file)",
                ", ".join(sorted(cut)) or "nobody",
            )
            self.peer_client.cut_off = cut

    async def _purge_tombstones(self) -> None:
        cutoff_ms = int((time.time() - self.config.tombstone_grace) * 1000)
        await self.store.purge_tombstones(cutoff_ms << LOGICAL_BITS)

    async def _check_peers_file(self) -> None:
        text = read_peers_file(self.config.peers_file)
        if text is None or text == self._peers_text:
            return
        try:
            members = parse_peers(text)
        except PeersError as exc:
            log.error("ignoring invalid peers file: %s", exc)
            return
        if not members:
            log.error("ignoring empty peers file")
            return
        self._peers_text = text
        await change_members(self.cluster, members)


def _jitter(interval: float) -> Callable[[], float]:
    import random

    return lambda: interval * random.uniform(0.8, 1.2)


def serve(config: Config) -> int:
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    retro = (
        telemetry.Retroactive(
            config.trace_buffer_size, config.trace_buffer_age, config.trace_latency_threshold
        )
        if config.trace_retroactive
        else None
    )
    telemetry.setup(raw_keys=config.trace_raw_keys, retro=retro)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the node extra
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_main(config))


async def _main(config: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        node = Node(config)
    except CredentialsError as exc:
        log.error("kvtrace node serve: %s", exc)
        return 2
    await node.run(stop)
    _flush_tracing()
    return 0


def _flush_tracing() -> None:
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "force_flush", None)
    if shutdown is not None and telemetry.ENABLED:
        shutdown(5000)


__all__ = ["Node", "serve"]
