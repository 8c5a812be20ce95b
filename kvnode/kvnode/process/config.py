"""`kvtrace node serve` configuration: every flag has a `KVNODE_*` variable (pure).

OPTIONS is the single table the CLI builds its parser and `--help` from; `resolve` merges
flags over environment over defaults and validates the result into a Config.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvnode.faults import Fault, parse_faults
from kvnode.replication.quorum import LEVELS
from kvnode.replication.ring import Member, PeersError, parse_hostport, parse_peers
from kvnode.storage import FSYNC_POLICIES
from kvnode.units import parse_duration, parse_size


@dataclass(frozen=True)
class Option:
    flag: str
    default: str
    help: str
    metavar: str = "VALUE"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return "KVNODE_" + self.dest.upper()


OPTIONS = (
    Option("--id", "", "this member's id, as listed in the peers (default: the host name)", "NAME"),
    Option("--client-addr", "0.0.0.0:7070", "client HTTP API listen address", "HOST:PORT"),
    Option("--peer-addr", "0.0.0.0:7071", "peer protocol listen address", "HOST:PORT"),
    Option("--peers", "", "every member, itself included: ID=HOST:PEERPORT,...", "LIST"),
    Option(
        "--peers-file",
        "",
        "file with the same list (commas or lines); re-read when it changes",
        "PATH",
    ),
    Option(
        "--peers-file-interval", "1s", "how often the peers file is checked for changes", "DURATION"
    ),
    Option(
        "--data-dir",
        "/var/lib/kvnode",
        "directory of the SQLite database (records and hints)",
        "DIR",
    ),
    Option("--replication-factor", "3", "replicas per key (N)", "N"),
    Option("--vnodes", "64", "virtual nodes per member on the hash ring", "N"),
    Option(
        "--consistency",
        "quorum",
        f"default consistency for requests without one ({'|'.join(LEVELS)})",
        "LEVEL",
    ),
    Option(
        "--anti-entropy-interval",
        "30s",
        "Merkle-tree comparison with each peer every DURATION (0 disables)",
        "DURATION",
    ),
    Option(
        "--hinted-handoff",
        "true",
        "store hints for unreachable replicas and replay them (true|false)",
        "BOOL",
    ),
    Option("--hint-interval", "1s", "how often pending hints are replayed", "DURATION"),
    Option(
        "--tombstone-grace",
        "24h",
        "how long deletes are kept as tombstones before purging",
        "DURATION",
    ),
    Option("--max-key-size", "4096", "largest key in bytes (413 above)", "SIZE"),
    Option(
        "--max-value-size",
        "1536KiB",
        "largest value in bytes (413 above); etcd's request limit is 1.5 MiB",
        "SIZE",
    ),
    Option(
        "--cache-size", "64MiB", "read cache of committed records, in bytes (0 disables)", "SIZE"
    ),
    Option(
        "--fsync-policy",
        "group",
        "always: one fsync per write; group: concurrent writes share one fsync "
        "(both ack only after fsync)",
        "POLICY",
    ),
    Option(
        "--group-commit-window",
        "0ms",
        "with group: wait this long to gather more writes per fsync",
        "DURATION",
    ),
    Option("--peer-timeout", "2s", "bound on every peer call (connect and answer)", "DURATION"),
    Option("--shutdown-timeout", "10s", "bound on the graceful shutdown after SIGTERM", "DURATION"),
    Option(
        "--catch-up-timeout",
        "120s",
        "after a start, /readyz waits until no peer holds hints for this node, "
        "at most this long (0: ready at once)",
        "DURATION",
    ),
    Option(
        "--tls-cert-file",
        "",
        "PEM certificate of this node (with --tls-key-file and --tls-ca-file: TLS on "
        "both ports, mutual TLS between peers)",
        "PATH",
    ),
    Option("--tls-key-file", "", "PEM private key of --tls-cert-file", "PATH"),
    Option(
        "--tls-ca-file",
        "",
        "PEM CA bundle: peers must present a certificate it signed; peers' servers are "
        "verified with it",
        "PATH",
    ),
    Option(
        "--auth-token-dir",
        "",
        "clients must send Authorization: Bearer TOKEN, TOKEN one of this directory's "
        "files (the file name is the client's label); /healthz, /readyz and /metrics stay open",
        "DIR",
    ),
    Option(
        "--reload-interval",
        "10s",
        "how often the TLS files and the token directory are re-read when changed",
        "DURATION",
    ),
    Option(
        "--faults",
        "",
        "TEST ONLY: error:PREFIX,delay:PREFIX:300ms fail or slow operations on "
        "key prefixes; protocol:LOW-HIGH speak only those peer protocol versions; "
        "partitions:PATH fail peer calls as its FROM TO lines say",
        "SPEC",
    ),
    Option(
        "--trace-raw-keys",
        "false",
        "DEVELOPMENT ONLY: also record raw keys on spans (true|false)",
        "BOOL",
    ),
    Option(
        "--trace-retroactive",
        "false",
        "retroactive sampling: record every operation's spans into a bounded buffer and keep, "
        "besides what OTEL_TRACES_SAMPLER keeps, every failed or slow operation's trace "
        "(true|false)",
        "BOOL",
    ),
    Option(
        "--trace-buffer-size",
        "32MiB",
        "retroactive sampling: bytes (estimated) of undecided spans held, 1MiB to 1GiB",
        "SIZE",
    ),
    Option(
        "--trace-buffer-age",
        "5s",
        "retroactive sampling: how long an undecided trace's spans are held, 100ms to 60s",
        "DURATION",
    ),
    Option(
        "--trace-latency-threshold",
        "500ms",
        "retroactive sampling: operations taking at least this long are kept",
        "DURATION",
    ),
    Option("--log-level", "info", "debug, info, warning or error", "LEVEL"),
)

TRACE_BUFFER_BYTES = (1 << 20, 1 << 30)  # --trace-buffer-size bounds
TRACE_BUFFER_AGE = (0.1, 60.0)  # --trace-buffer-age bounds, seconds


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Config:
    id: str
    client_host: str
    client_port: int
    peer_host: str
    peer_port: int
    peers: tuple[Member, ...]
    peers_file: str
    peers_file_interval: float
    data_dir: str
    replication_factor: int
    vnodes: int
    consistency: str
    anti_entropy_interval: float
    hinted_handoff: bool
    hint_interval: float
    tombstone_grace: float
    max_key_size: int
    max_value_size: int
    cache_size: int
    fsync_policy: str
    group_commit_window: float
    peer_timeout: float
    shutdown_timeout: float
    catch_up_timeout: float
    tls_cert_file: str
    tls_key_file: str
    tls_ca_file: str
    auth_token_dir: str
    reload_interval: float
    faults: tuple[Fault, ...]
    trace_raw_keys: bool
    log_level: str
    trace_retroactive: bool
    trace_buffer_size: int
    trace_buffer_age: float
    trace_latency_threshold: float


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def raw_values(flags: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Flag if given, else the KVNODE_* variable, else the default."""
    out = {}
    for opt in OPTIONS:
        value = flags.get(opt.dest)
        if value is None:
            value = env.get(opt.env, opt.default)
        out[opt.dest] = str(value)
    return out


def resolve(
    flags: Mapping[str, Any], env: Mapping[str, str], peers_file_text: str | None = None
) -> Config:
    v = raw_values(flags, env)
    try:
        client_host, client_port = parse_hostport(v["client_addr"])
        peer_host, peer_port = parse_hostport(v["peer_addr"])
        text = peers_file_text if v["peers_file"] else v["peers"]
        peers = parse_peers(text or "")
        node_id = v["id"] or socket.gethostname()
        config = Config(
            id=node_id,
            client_host=client_host,
            client_port=client_port,
            peer_host=peer_host,
            peer_port=peer_port,
            peers=peers,
            peers_file=v["peers_file"],
            peers_file_interval=parse_duration(v["peers_file_interval"]),
            data_dir=v["data_dir"],
            replication_factor=int(v["replication_factor"]),
            vnodes=int(v["vnodes"]),
            consistency=v["consistency"].lower(),
            anti_entropy_interval=parse_duration(v["anti_entropy_interval"]),
            hinted_handoff=_bool(v["hinted_handoff"]),
            hint_interval=parse_duration(v["hint_interval"]),
            tombstone_grace=parse_duration(v["tombstone_grace"]),
            max_key_size=parse_size(v["max_key_size"]),
            max_value_size=parse_size(v["max_value_size"]),
            cache_size=parse_size(v["cache_size"]),
            fsync_policy=v["fsync_policy"],
            group_commit_window=parse_duration(v["group_commit_window"]),
            peer_timeout=parse_duration(v["peer_timeout"]),
            shutdown_timeout=parse_duration(v["shutdown_timeout"]),
            catch_up_timeout=parse_duration(v["catch_up_timeout"]),
            tls_cert_file=v["tls_cert_file"],
            tls_key_file=v["tls_key_file"],
            tls_ca_file=v["tls_ca_file"],
            auth_token_dir=v["auth_token_dir"],
            reload_interval=parse_duration(v["reload_interval"]),
            faults=parse_faults(v["faults"]),
            trace_raw_keys=_bool(v["trace_raw_keys"]),
            log_level=v["log_level"].upper(),
            trace_retroactive=_bool(v["trace_retroactive"]),
            trace_buffer_size=parse_size(v["trace_buffer_size"]),
            trace_buffer_age=parse_duration(v["trace_buffer_age"]),
            trace_latency_threshold=parse_duration(v["trace_latency_threshold"]),
        )
    except (ValueError, PeersError) as exc:
        raise ConfigError(str(exc)) from None
    problems = []
    if not config.peers and not config.peers_file:
        problems.append("no members: give --peers or --peers-file")
    elif config.id not in {m.id for m in config.peers} and not config.peers_file:
        # With a peers file a member that is not listed is leaving: it starts and drains.
        problems.append(f"this node's id {config.id!r} is not among the peers")
    if config.replication_factor < 1:
        problems.append("--replication-factor must be at least 1")
    if config.vnodes < 1:
        problems.append("--vnodes must be at least 1")
    if config.consistency not in LEVELS:
        problems.append(f"--consistency must be one of {', '.join(LEVELS)}")
    if config.fsync_policy not in FSYNC_POLICIES:
        problems.append(f"--fsync-policy must be one of {', '.join(FSYNC_POLICIES)}")
    if config.peer_timeout <= 0:
        problems.append("--peer-timeout must be positive")
    if config.max_key_size < 1 or config.max_value_size < 0:
        problems.append("size limits must be positive")
    problems += security_problems(config)
    problems += tracing_problems(config)
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def tracing_problems(config: Config) -> list[str]:
    problems = []
    low, high = TRACE_BUFFER_BYTES
    if not low <= config.trace_buffer_size <= high:
        problems.append(
            f"--trace-buffer-size must be from 1MiB to 1GiB, got {config.trace_buffer_size} bytes"
        )
    low_s, high_s = TRACE_BUFFER_AGE
    if not low_s <= config.trace_buffer_age <= high_s:
        problems.append(
            f"--trace-buffer-age must be from 100ms to 60s, got {config.trace_buffer_age:g}s"
        )
    if config.trace_latency_threshold < 0.001:
        problems.append("--trace-latency-threshold must be at least 1ms")
    return problems


def security_problems(config: Config) -> list[str]:
    """What is wrong with the TLS and token settings (whether the files load is checked when
    the node starts: process/node.py)."""
    problems = []
    tls = {
        "--tls-cert-file": config.tls_cert_file,
        "--tls-key-file": config.tls_key_file,
        "--tls-ca-file": config.tls_ca_file,
    }
    given = [flag for flag, path in tls.items() if path]
    if given and len(given) < len(tls):
        missing = ", ".join(flag for flag in tls if flag not in given)
        problems.append(f"{', '.join(given)} given without {missing}: TLS needs all three")
    if config.reload_interval <= 0:
        problems.append("--reload-interval must be positive")
    return problems
