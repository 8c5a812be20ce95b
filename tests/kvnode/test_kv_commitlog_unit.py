"""The commit log's framing and decoding, and merging held records into index reads (pure)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnode.keys import key_hash
from kvnode.storage import Record
from kvnode.storage.commitlog import (
    FRAME,
    HEADER,
    LogError,
    check_header,
    decode_frames,
    decode_records,
    encode_frame,
    encode_records,
    header,
)
from kvnode.storage.held import merge_digests, merge_pages

pytestmark = pytest.mark.unit

A = [Record(b"a", b"1", 10), Record(b"b", b"", 11, True)]
B = [Record(b"c", b"x" * 300, 12), Record(b"a", b"2", 13)]
C = [Record(b"\x00\xff", b"\x00", (1 << 63) - 1)]


def log_of(generation: int, *batches: list[Record]) -> bytes:
    return header() + b"".join(encode_frame(generation, encode_records(b)) for b in batches)


def test_frames_round_trip_in_order() -> None:
    buf = log_of(7, A, B, C)
    replay = decode_frames(buf, HEADER.size, 7)
    assert replay.records == A + B + C
    assert (replay.frames, replay.end, replay.stop) == (3, len(buf), "end")


def test_unwritten_area_ends_the_log() -> None:
    buf = log_of(1, A) + bytes(4096)  # preallocated zeros after the last frame
    replay = decode_frames(buf, HEADER.size, 1)
    assert replay.records == A and replay.stop == "end" and replay.end == len(buf) - 4096


@pytest.mark.parametrize("cut", [1, FRAME.size - 1, FRAME.size, FRAME.size + 5])
def test_torn_tail_frame_is_discarded(cut: int) -> None:
    whole = log_of(3, A, B)
    last = encode_frame(3, encode_records(C))
    replay = decode_frames(whole + last[:cut], HEADER.size, 3)
    assert replay.records == A + B
    assert replay.end == len(whole)
    assert replay.stop == ("end" if cut < FRAME.size else "short")


def test_changed_byte_fails_the_crc_and_stops_there() -> None:
    buf = bytearray(log_of(3, A, B, C))
    second = HEADER.size + FRAME.size + len(encode_records(A))
    buf[second + FRAME.size + 4] ^= 0x01  # a bit of the second frame's payload
    replay = decode_frames(bytes(buf), HEADER.size, 3)
    assert replay.records == A and replay.stop == "crc" and replay.end == second


def test_frames_of_another_generation_are_not_replayed() -> None:
    # a checkpoint moved the log to generation 5: the old generation's frames left behind
    # after the new ones (the file is rewritten in place) end the replay
    newer = log_of(5, C)
    older = log_of(4, A, B)
    buf = newer + older[len(newer) :]
    replay = decode_frames(buf, HEADER.size, 5)
    assert replay.records == C and replay.stop == "crc"
    assert decode_frames(older, HEADER.size, 5).records == []


def test_length_field_cannot_claim_more_than_the_file() -> None:
    buf = header() + FRAME.pack(1 << 31, 0) + b"x" * 10
    assert decode_frames(buf, HEADER.size, 1).stop == "short"


def test_header_is_checked() -> None:
    check_header(header(), "kv.log")
    with pytest.raises(LogError, match="not a kvnode commit log"):
        check_header(b"SQLite format 3\x00" + bytes(8), "kv.log")
    with pytest.raises(LogError, match="shorter than"):
        check_header(b"KV", "kv.log")


def test_malformed_payload_is_refused() -> None:
    payload = encode_records(A)
    with pytest.raises(ValueError, match="cut"):
        decode_records(payload + b"\x00\x01")
    with pytest.raises(ValueError, match="malformed"):
        decode_records(b"\x02" + payload[1:])  # unknown flag bit


records = st.lists(
    st.builds(
        Record,
        st.binary(min_size=1, max_size=40),
        st.binary(max_size=200),
        st.integers(0, (1 << 64) - 1),
        st.booleans(),
    ),
    min_size=1,
    max_size=20,
)


@settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=5), st.integers(0, 1 << 63), st.data())
def test_any_prefix_decodes_to_whole_frames_only(
    batches: list[list[Record]], generation: int, data: st.DataObject
) -> None:
    buf = log_of(generation, *batches)
    cut = data.draw(st.integers(HEADER.size, len(buf)))
    replay = decode_frames(buf[:cut], HEADER.size, generation)
    ends = [HEADER.size]
    for b in batches:
        ends.append(ends[-1] + FRAME.size + len(encode_records(b)))
    whole = max(i for i, end in enumerate(ends) if end <= cut)
    assert replay.frames == whole and replay.end == ends[whole]
    assert replay.records == [r for b in batches[:whole] for r in b]


def test_merge_digests_newest_per_key_and_ranges() -> None:
    rows = [
        (b"a", key_hash(b"a"), 5, 0),
        (b"b", key_hash(b"b"), 9, 0),
        (b"c", key_hash(b"c"), 1, 0),
    ]
    held = {
        b"a": Record(b"a", b"new", 6),  # newer than the index: replaces its row
        b"b": Record(b"b", b"old", 8),  # older (checkpointed meanwhile): the row stays
        b"d": Record(b"d", b"", 3, True),  # only held
    }
    merged = sorted(merge_digests(rows, held, None))
    assert merged == [
        (b"a", key_hash(b"a"), 6, False),
        (b"b", key_hash(b"b"), 9, False),
        (b"c", key_hash(b"c"), 1, False),
        (b"d", key_hash(b"d"), 3, True),
    ]
    hd = key_hash(b"d")
    only_d = merge_digests([], held, [(hd, hd + 1)])
    assert only_d == [(b"d", hd, 3, True)]


def test_merge_pages_keeps_key_order_and_page_size() -> None:
    index = [Record(bytes([k]), b"i", 1) for k in range(0, 40, 2)]
    pages = iter([index[i : i + 6] for i in range(0, len(index), 6)])
    held = {bytes([k]): Record(bytes([k]), b"h", 2) for k in (0, 5, 7, 38, 39, 90)}
    out = list(merge_pages(pages, held, 4))
    assert all(len(p) <= 4 for p in out) and all(len(p) == 4 for p in out[:-1])
    flat = [r for p in out for r in p]
    assert [r.key for r in flat] == sorted({r.key for r in index} | set(held))
    assert {r.key: r.value for r in flat}[bytes([38])] == b"h"
    assert {r.key: r.value for r in flat}[bytes([2])] == b"i"
