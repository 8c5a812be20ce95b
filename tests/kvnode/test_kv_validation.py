"""Request validation, configuration parsing, fault specs and the peer wire format."""

from __future__ import annotations

import pytest

from kvnode.faults import cut_off, match, parse_faults, partitions_file, protocol_versions
from kvnode.process.config import OPTIONS, ConfigError, resolve
from kvnode.replication.quorum import required
from kvnode.storage import Record
from kvnode.transport import frames
from kvnode.transport.validation import (
    InvalidRequest,
    Limits,
    validate_consistency,
    validate_key,
    validate_value_size,
)
from kvnode.units import parse_duration, parse_size

pytestmark = pytest.mark.unit

LIMITS = Limits(max_key=16, max_value=100)


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        ("", 400, "invalid_key"),
        ("a\nb", 400, "invalid_key"),
        ("x" * 17, 413, "key_too_large"),
        ("é" * 9, 413, "key_too_large"),
    ],
)
def test_bad_keys(key: str, status: int, code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_key(key, LIMITS)
    assert (err.value.status, err.value.code) == (status, code)


def test_good_keys_sizes_and_levels() -> None:
    assert validate_key("users/42 é", LIMITS) == "users/42 é".encode()
    validate_value_size(100, LIMITS)
    validate_value_size(None, LIMITS)
    with pytest.raises(InvalidRequest) as err:
        validate_value_size(101, LIMITS)
    assert err.value.status == 413
    assert validate_consistency(None, "quorum") == "quorum"
    assert validate_consistency("ALL", "quorum") == "all"
    with pytest.raises(InvalidRequest) as err:
        validate_consistency("two", "quorum")
    assert err.value.code == "invalid_consistency"
    assert [required(level, 3) for level in ("one", "quorum", "all")] == [1, 2, 3]
    assert required("quorum", 5) == 3 and required("quorum", 1) == 1


def test_config_flags_override_env_override_defaults() -> None:
    env = {
        "KVNODE_ID": "b",
        "KVNODE_PEERS": "a=h1:7071,b=h2:7071",
        "KVNODE_REPLICATION_FACTOR": "2",
    }
    config = resolve({"replication_factor": "3", "fsync_policy": None}, env)
    assert (config.id, config.replication_factor, config.fsync_policy) == ("b", 3, "group")
    assert config.client_port == 7070 and config.peer_port == 7071
    assert config.max_value_size == 1536 * 1024
    assert config.anti_entropy_interval == 30.0
    assert [m.id for m in config.peers] == ["a", "b"]
    assert all(opt.env.startswith("KVNODE_") for opt in OPTIONS)
    assert {opt.env for opt in OPTIONS} >= {
        "KVNODE_DATA_DIR",
        "KVNODE_PEERS_FILE",
        "KVNODE_ANTI_ENTROPY_INTERVAL",
    }


@pytest.mark.parametrize(
    "env",
    [
        {"KVNODE_ID": "z", "KVNODE_PEERS": "a=h:1"},
        {"KVNODE_ID": "a", "KVNODE_PEERS": "a=h:1", "KVNODE_CONSISTENCY": "two"},
        {"KVNODE_ID": "a", "KVNODE_PEERS": "a=h:1", "KVNODE_FSYNC_POLICY": "never"},
        {"KVNODE_ID": "a", "KVNODE_PEERS": "a=h:1", "KVNODE_PEER_TIMEOUT": "soon"},
        {"KVNODE_ID": "a"},
    ],
)
def test_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        resolve({}, env)


def test_units_and_faults() -> None:
    assert parse_duration("300ms") == pytest.approx(0.3)
    assert parse_duration("2") == 2.0 and parse_duration("5m") == 300.0
    assert parse_size("64KiB") == 65536 and parse_size("10") == 10
    faults = parse_faults("error:fail/, delay:slow/:250ms")
    assert match(faults, b"fail/x").kind == "error"  # type: ignore[union-attr]
    assert match(faults, b"slow/x").delay == pytest.approx(0.25)  # type: ignore[union-attr]
    assert match(faults, b"other") is None
    assert parse_faults("") == ()
    for bad in ("explode:x", "delay:x", "delay:p:fast"):
        with pytest.raises(ValueError):
            parse_faults(bad)


def test_frames_round_trip_and_reject_garbage() -> None:
    records = [Record(b"k1", b"v" * 300, 12345, False), Record(b"k2", b"", 7, True)]
    frame = frames.encode(
        9,
        frames.PUT,
        frames.encode_records(records, 2),
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "x=y",
    )
    buf = bytearray(frame + frame[:5])
    payloads = frames.split(buf, 1 << 20)
    assert len(payloads) == 1 and bytes(buf) == frame[:5]
    msg = frames.decode(payloads[0])
    assert (msg.request_id, msg.type, msg.tracestate) == (9, frames.PUT, "x=y")
    assert frames.decode_records(msg.body) == (2, records)
    with pytest.raises(frames.ProtocolError):
        frames.split(bytearray(b"\xff\xff\xff\xff garbage"), 1 << 20)
    for body in (
        b"",
        b"\x00\x00\x00\x00\x05",
        frames.encode_records(records)[:-3],
        frames.encode_records(records) + b"x",
    ):
        with pytest.raises(frames.ProtocolError):
            frames.decode_records(body)
    with pytest.raises(frames.ProtocolError):
        frames.decode(b"\x00\x00\x00\x01\x01\xff")
    assert frames.decode_fetch(frames.encode_fetch("n1", [1, 5]), 1024) == ("n1", [1, 5])
    with pytest.raises(frames.ProtocolError):
        frames.decode_fetch(frames.encode_fetch("n1", [5000]), 1024)


def test_frame_fast_paths_encode_exactly_like_the_general_format() -> None:
    """Untraced frames and one-record bodies take one struct pack each (the hot path); the
    bytes are those of the general layout, so both ends interoperate with older nodes."""
    record = Record(b"key", b"v" * 100, (1 << 40) + 3, False)
    general = b"".join(
        (
            bytes((3,)),
            frames._U32.pack(1),
            frames._REC.pack(3, 100, record.version, 0),
            b"key",
            b"v" * 100,
        )
    )
    assert frames.encode_records([record], 3) == general
    assert frames.encode_records([record._replace(tombstone=True, value=b"")], 1)[-4:-3] == b"\x01"
    body = frames.encode_records([record])
    bare = frames.encode(7, frames.PUT, body)
    assert (
        bare
        == frames._LEN.pack(8 + len(body))
        + frames._HEAD.pack(7, frames.PUT, 0)
        + b"\x00\x00"
        + body
    )
    msg = frames.decode(frames.split(bytearray(bare), 1 << 20)[0])
    assert msg == frames.Message(7, frames.PUT, "", "", body) and type(msg) is frames.Message
    op, decoded = frames.decode_records(msg.body)
    assert (
        (op, decoded) == (0, [record])
        and type(decoded[0]) is Record
        and decoded[0].tombstone is False
    )
    assert (
        frames.decode_records(frames.encode_records([Record(b"k", b"", 5, True)]))[1][0].tombstone
        is True
    )
    with pytest.raises(
        frames.ProtocolError
    ):  # an empty traceparent, then a cut-off tracestate length
        frames.decode(b"\x00\x00\x00\x01\x01\x00\x00")


def test_peer_trace_context_parses_like_the_w3c_propagator() -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from kvnode import telemetry

    w3c = TraceContextTextMapPropagator()
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-"
    for traceparent, tracestate in (
        (good + "01", "a=b,c=d"),
        (good + "00", ""),
        ("01-" + good[3:] + "01-later", ""),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", ""),
        ("00-" + "z" * 32 + "-00f067aa0ba902b7-01", ""),
    ):
        carrier = {"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})}
        ours = telemetry.context_from(traceparent, tracestate)
        theirs = w3c.extract(carrier)
        ours_ctx = trace.get_current_span(ours).get_span_context()
        assert ours_ctx == trace.get_current_span(theirs).get_span_context()
        assert ours_ctx.trace_state == trace.get_current_span(theirs).get_span_context().trace_state
    assert telemetry.context_from("", "") is None


def test_peer_protocol_versions_negotiate_the_newest_common_one() -> None:
    assert frames.negotiate((1, 2), (1, 1)) == 1  # this build and the previous release
    assert frames.negotiate((1, 2), (2, 3)) == 2  # this build and the next release
    assert frames.negotiate((1, 2), (3, 4)) is None  # two releases apart: refused
    assert frames.decode_hello(frames.encode_hello((1, 2), "kv-0")) == ((1, 2), "kv-0")
    for bad in (b"\x00", frames.encode_hello((3, 2), "x"), b"\x00\x01\x00\x02\xff"):
        with pytest.raises(frames.ProtocolError, match="malformed hello"):
            frames.decode_hello(bad)
    assert protocol_versions(parse_faults("protocol:1-1,error:x"), (1, 2)) == (1, 1)
    assert protocol_versions(parse_faults("error:x"), (1, 2)) == (1, 2)
    assert match(parse_faults("protocol:1-1"), b"any") is None
    for bad in ("protocol:2", "protocol:2-1", "protocol:0-1", "protocol:a-b"):
        with pytest.raises(ValueError, match="protocol:LOW-HIGH"):
            parse_faults(bad)


def test_partition_faults_name_the_members_a_node_cannot_send_to() -> None:
    faults = parse_faults("partitions:/tmp/p, error:x")
    assert partitions_file(faults) == "/tmp/p" and partitions_file(parse_faults("")) == ""
    text = "kv-0 kv-1\nkv-1 kv-0  # two-way\nkv-2 kv-0\n\nbroken line here\n"
    assert cut_off(text, "kv-0") == {"kv-1"} and cut_off(text, "kv-2") == {"kv-0"}
    assert cut_off(text, "kv-3") == set()
    with pytest.raises(ValueError, match="partitions:PATH"):
        parse_faults("partitions:")
