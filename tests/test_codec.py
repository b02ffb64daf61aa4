"""The BufferJSON codec and id validation (no I/O)."""

from __future__ import annotations

import array
import contextlib
import json
import math
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_session_store import InvalidInputError, InvalidTypeError
from wa_session_store.errors import DecodeError
from wa_session_store.store.codec import (
    MAX_NESTING,
    _buffer_hook,
    _encode_text,
    _flat_buffers,
    _reads_as_bytes,
    decode_value,
    encode_creds,
    encode_key_batch,
    encode_value,
)
from wa_session_store.store.ids import check_category, check_key_id, check_session_id

from .support.values import read_back

text = st.text(st.characters(exclude_categories=("Cs",)))
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | text
    | st.binary()
    | st.floats(allow_nan=False, allow_infinity=False)
)


def _not_a_buffer_literal(value: dict[str, Any]) -> bool:
    return value.get("type") != "Buffer" and value.get("buffer") is not True


json_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(text, children, max_size=5).filter(_not_a_buffer_literal)
    ),
    max_leaves=30,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_round_trip(value: Any) -> None:
    assert decode_value(encode_value(value, what="v"), what="v") == value


@given(st.binary())
def test_bytes_like_objects_come_back_as_bytes(data: bytes) -> None:
    for wrapped in (data, bytearray(data), memoryview(data)):
        assert decode_value(encode_value({"k": wrapped}, what="v"), what="v") == {"k": data}


def test_buffer_json_is_baileys_format() -> None:
    encoded = json.loads(encode_value({"key": b"\x00\xff"}, what="v"))
    assert encoded == {"key": {"type": "Buffer", "data": "AP8="}}


def test_every_buffer_form_baileys_reads_is_read() -> None:
    legacy = b'{"public":{"type":"Buffer","data":[1,2,255]}}'
    assert decode_value(legacy, what="v") == {"public": b"\x01\x02\xff"}
    with_extra_keys = b'{"type":"Buffer","data":"AP8=","encoding":"base64"}'
    assert decode_value(with_extra_keys, what="v") == b"\x00\xff"
    flagged = b'[{"buffer":true,"value":"AP8="},{"buffer":true,"value":[7]}]'
    assert decode_value(flagged, what="v") == [b"\x00\xff", b"\x07"]


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels // 2):
        value = {"n": [value]}
    return value


def _on_a_deep_stack(frames: int, call: Any) -> Any:
    if frames:
        return _on_a_deep_stack(frames - 1, call)
    return call()


def test_nesting_up_to_the_limit_reads_back_from_any_reader_s_stack() -> None:
    value = _nested(MAX_NESTING)
    blob = encode_value(value, what="v")
    # Written from a shallow stack, read from a deep one: a bot's handler
    # inside asyncio, a client library and a web framework.
    frames = sys.getrecursionlimit() - MAX_NESTING - 150
    assert _on_a_deep_stack(frames, lambda: decode_value(blob, what="v")) == value


def test_nesting_past_the_limit_is_refused_even_when_the_writer_could_encode_it() -> None:
    # Before, the writer's own stack decided: 400 levels were accepted at the
    # top of a script and could then not be read inside a deeper one.
    for levels in (MAX_NESTING + 1, 400):
        deep: Any = "leaf"
        for _ in range(levels):
            deep = [deep]
        with pytest.raises(InvalidInputError, match=f"at most {MAX_NESTING} levels"):
            encode_value(deep, what="v")


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ({1, 2}, InvalidTypeError, "set"),
        (object(), InvalidTypeError, "object"),
        ({"x": float("nan")}, InvalidInputError, "NaN or infinity"),
        ([math.inf], InvalidInputError, "NaN or infinity"),
    ],
)
def test_values_json_cannot_hold_are_refused(value: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        encode_value(value, what="value of pre-key '1'")


def test_circular_and_too_deep_values_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidInputError, match=r"circular|deeply"):
        encode_value(loop, what="v")
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidInputError, match="deeply"):
        encode_value(deep, what="v")


def test_size_limit() -> None:
    encode_value("x" * 98, what="v", max_size=100)
    with pytest.raises(InvalidInputError, match="101 bytes; the limit is 100"):
        encode_value("x" * 99, what="v", max_size=100)


def test_default_limit_admits_32_mib() -> None:
    encode_value({"blob": "x" * (32 * 1024 * 1024)}, what="v")


def test_error_messages_never_contain_the_value() -> None:
    secret = "SECRET-VALUE-123"
    for bad in ({"s": secret, "n": float("nan")}, {"s": secret, "x": {1}}):
        with pytest.raises(InvalidInputError) as info:
            encode_value(bad, what="value of pre-key '1'")
        assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("check", "limit"), [(check_session_id, 255), (check_category, 64), (check_key_id, 1024)]
)
def test_id_rules(check: Any, limit: int) -> None:
    assert check("a" * limit) == "a" * limit
    assert check("quote'\"; DROP TABLE x") == "quote'\"; DROP TABLE x"
    with pytest.raises(InvalidInputError, match="empty"):
        check("")
    with pytest.raises(InvalidInputError, match=f"at most {limit}"):
        check("a" * (limit + 1))
    for bad in ("nul\x00", "tab\t", "del\x7f", "c1\x85", "surrogate\udc00"):
        with pytest.raises(InvalidInputError, match=r"control character|lone surrogate"):
            check(bad)
    with pytest.raises(InvalidTypeError):
        check(b"bytes")
    with pytest.raises(TypeError):  # also the builtin
        check(None)


def test_int_key_ids_become_str() -> None:
    assert check_key_id(7) == "7"
    with pytest.raises(InvalidTypeError):
        check_key_id(True)


def test_creds_must_be_a_mapping() -> None:
    with pytest.raises(InvalidTypeError, match="mapping"):
        encode_creds([("a", 1)], session_id="s", max_size=100)


def test_key_batch_shape_and_dedup() -> None:
    rows = encode_key_batch({"pre-key": {7: "b", "7": "b", "8": None}}, max_size=100)
    assert rows == [("pre-key", "7", b'"b"'), ("pre-key", "8", None)]
    # The same stored id with two different values: refused, never one silently dropped.
    with pytest.raises(InvalidInputError, match="given twice"):
        encode_key_batch({"pre-key": {7: "a", "7": "b"}}, max_size=100)
    with pytest.raises(InvalidTypeError, match="mapping"):
        encode_key_batch({"pre-key": ["not", "a", "mapping"]}, max_size=100)
    with pytest.raises(InvalidTypeError):
        encode_key_batch([("pre-key", {})], max_size=100)


def test_corrupt_stored_data_is_a_decode_error() -> None:
    for data in (b"\xff\xfe", b"{not json", b'{"type":"Buffer","data":"!!"}'):
        with pytest.raises(DecodeError):
            decode_value(data, what="v")


@given(st.dictionaries(text, st.binary(), min_size=1, max_size=6))
def test_key_pair_fast_path_writes_what_the_encoder_writes(value: dict[str, bytes]) -> None:
    assert _flat_buffers(value) == _encode_text(value)
    assert encode_value(value, what="v") == _encode_text(value).encode()


def test_key_pair_fast_path_leaves_other_shapes_to_the_encoder() -> None:
    for value in ({"a": b"x", "n": 1}, {"a": bytearray(b"x")}, {1: b"x"}, {}, [b"x"], b"x"):
        assert _flat_buffers(value) is None


# -- accept only what reads back equal ------------------------------------------


def _raw_round_trip(value: Any) -> Any:
    """The value as the decoder reads the encoder's text, with no check in between."""
    try:
        return decode_value(_encode_text(value).encode("utf-8", "surrogatepass"), what="v")
    except DecodeError:
        return DecodeError


# Dicts built from the keys and values the Buffer hook looks at, so that the
# walk meets every near miss: markers with a payload of every type, payloads
# without a marker, "type" values that are not "Buffer", extra keys.
base64ish = st.sampled_from(["", "AA==", "AAA=", "QR==", "@@", "AP8=", "Zm9v", "QQ"])
buffer_parts = st.one_of(
    base64ish,
    st.lists(st.integers(-2, 300), max_size=3),
    st.lists(st.integers(0, 255), max_size=3).map(tuple),
    st.sampled_from(["Buffer", "buffer", "Buffer ", True, False, 1, 1.0, None]),
    st.binary(max_size=3),
)
buffer_keys = st.sampled_from(["type", "data", "buffer", "value", "x", "encoding"])
buffer_like = st.builds(
    lambda marker, payload, extra: {**marker, **payload, **extra},
    st.sampled_from([{"type": "Buffer"}, {"buffer": True}, {"type": "buffer"}, {"buffer": 1}, {}]),
    st.dictionaries(st.sampled_from(["data", "value"]), buffer_parts | leaves, max_size=2),
    st.dictionaries(st.sampled_from(["x", "encoding", "type"]), leaves, max_size=1),
)
near_buffers = st.recursive(
    buffer_parts | leaves | buffer_like,
    lambda children: (
        st.dictionaries(buffer_keys, children, max_size=4)
        | st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(text, children, max_size=3)
    ),
    max_leaves=12,
)


@given(near_buffers)
@settings(max_examples=1500, deadline=None)
def test_what_is_accepted_reads_back_equal_and_only_that_is_refused(value: Any) -> None:
    expected = read_back(value)
    try:
        blob = encode_value(value, what="v")
    except InvalidInputError:
        assert _raw_round_trip(value) != expected, "refused a value that reads back equal"
        return
    assert decode_value(blob, what="v") == expected


@given(buffer_like | st.dictionaries(buffer_keys, buffer_parts | leaves, max_size=4))
@settings(max_examples=500, deadline=None)
def test_the_writer_refuses_exactly_the_dicts_the_buffer_hook_converts(obj: Any) -> None:
    decoded = json.loads(_encode_text(obj), object_hook=lambda o: o)
    converted = True  # unless the hook returns it: a failure (bad base64) is a conversion too
    with contextlib.suppress(ValueError, TypeError):
        converted = _buffer_hook(decoded) is not decoded
    assert _reads_as_bytes(obj) == converted


SECRET_B64 = "U0VDUkVULUtFWS1CWVRFUw=="


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"type": "Buffer", "data": "@@"}, "the top level"),
        ({"noise": {"private": {"type": "Buffer", "data": SECRET_B64}}}, "['noise']['private']"),
        ({"k": {"type": "Buffer", "data": SECRET_B64, "x": 1}}, "['k']"),
        ({"k": {"type": "Buffer", "data": "QR=="}}, "['k']"),  # non-canonical base64
        ({"k": [{"type": "Buffer", "data": [1, 2, 300]}]}, "['k'][0]"),
        ({"k": {"type": "Buffer", "data": (1, 2)}}, "['k']"),
        ({"k": {"buffer": True, "value": SECRET_B64}}, "['k']"),
        ({"k": {"buffer": True, "data": [7], "value": 5}}, "['k']"),
        ({"U0VDUkVULUtFWS1CWVRFUw+/": {"type": "Buffer", "data": ""}}, "[...]"),
    ],
)
def test_dicts_the_decoder_would_read_as_bytes_are_refused(value: Any, where: str) -> None:
    with pytest.raises(InvalidInputError, match="shaped like a BufferJSON Buffer") as info:
        encode_value(value, what="creds of session 's'")
    message = str(info.value)
    assert f"at {where}" in message
    assert "use bytes" in message
    assert "U0VDUkVU" not in message  # no part of the data
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "value",
    [
        {"type": "Buffer"},
        {"type": "Buffer", "data": 5},
        {"type": "Buffer", "data": None, "value": "AA=="},
        {"type": "Buffer", "data": b"\x00"},
        {"type": "buffer", "data": "AA=="},
        {"buffer": 1, "value": "AA=="},
        {"buffer": False, "value": [1]},
        {"data": "AA==", "value": [1]},
    ],
)
def test_near_misses_of_the_buffer_shape_are_accepted_and_read_back_equal(value: Any) -> None:
    assert decode_value(encode_value(value, what="v"), what="v") == value


def test_memoryviews_must_read_back_as_the_bytes_they_equal() -> None:
    strided = memoryview(b"abcd")[::2]
    assert decode_value(encode_value([strided], what="v"), what="v") == [b"ac"] == [strided]
    for view in (memoryview(array.array("i", [1])), memoryview(b"ab").cast("c")):
        assert view != bytes(view)
        with pytest.raises(InvalidTypeError, match="memoryview of format"):
            encode_value({"k": view}, what="v")
