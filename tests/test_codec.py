"""The BufferJSON codec and id validation (no I/O)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_session_store import InvalidInputError, InvalidTypeError
from wa_session_store._codec import (
    _encode_text,
    _flat_buffers,
    check_category,
    check_key_id,
    check_session_id,
    decode_value,
    encode_creds,
    encode_key_batch,
    encode_value,
)
from wa_session_store.errors import DecodeError

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


def test_deep_nesting_within_the_recursion_limit_round_trips() -> None:
    value: Any = "leaf"
    for _ in range(200):
        value = {"n": [value]}
    assert decode_value(encode_value(value, what="v"), what="v") == value


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
