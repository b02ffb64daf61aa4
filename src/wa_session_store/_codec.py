"""Validation of ids and encoding of values: pure functions, no I/O.

Values are stored as UTF-8 JSON in the BufferJSON dialect of Baileys: bytes
become ``{"type": "Buffer", "data": "<base64>"}``. The legacy form with a list
of ints as ``data`` is read too. Encoding runs in the C JSON encoder; only
bytes-like objects reach Python code, through ``default``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .errors import DecodeError, InvalidInputError, InvalidTypeError

MAX_SESSION_ID_LENGTH: Final = 255
MAX_CATEGORY_LENGTH: Final = 64
MAX_KEY_ID_LENGTH: Final = 1024
#: Default limit of one encoded value (creds document or key), in bytes.
DEFAULT_MAX_VALUE_SIZE: Final = 64 * 1024 * 1024

# C0 and C1 control characters, DEL, and lone surrogates (which UTF-8 cannot carry).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _describe_char(text: str) -> str:
    match = _FORBIDDEN.search(text)
    assert match is not None
    code = ord(match.group())
    kind = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    return f"{kind} (U+{code:04X}) at position {match.start()}"


def _check_name(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{what} must not be empty (1 to {limit} characters)")
    if len(value) > limit:
        raise InvalidInputError(
            f"{what} is {len(value)} characters long; at most {limit} are allowed"
        )
    if _FORBIDDEN.search(value):
        raise InvalidInputError(
            f"{what} {value[:40]!r} contains {_describe_char(value)}; "
            "control characters and lone surrogates are not allowed"
        )
    return value


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is a valid session id, else raise.

    Raises:
        InvalidTypeError: not a str.
        InvalidInputError: empty, over 255 characters, or holding a control
            character or a lone surrogate.
    """
    return _check_name("session id", session_id, MAX_SESSION_ID_LENGTH)


def check_category(category: object) -> str:
    """Return ``category`` if it is a valid key category (1 to 64 characters)."""
    return _check_name("key category", category, MAX_CATEGORY_LENGTH)


def check_key_id(key_id: object) -> str:
    """Return the key id as stored: a str as is, an int as its ``str()``."""
    if isinstance(key_id, int) and not isinstance(key_id, bool):
        key_id = str(key_id)
    return _check_name("key id", key_id, MAX_KEY_ID_LENGTH)


def check_key_ids(ids: object) -> list[str]:
    """Validate the ids of a ``get_keys`` call, keeping their order, without duplicates."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidTypeError(
            f"ids must be an iterable of str or int key ids, not {type(ids).__name__}"
        )
    return list(dict.fromkeys(check_key_id(key_id) for key_id in ids))


def _default(obj: object) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"type": "Buffer", "data": base64.b64encode(obj).decode("ascii")}
    raise TypeError(type(obj).__name__)


_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
)


def encode_value(value: object, *, what: str, max_size: int = DEFAULT_MAX_VALUE_SIZE) -> bytes:
    """Encode one value as UTF-8 BufferJSON.

    ``what`` names the value in error messages (e.g. ``"value of pre-key 7"``);
    it must not contain the value itself.

    Raises:
        InvalidTypeError: a type JSON cannot hold (set, arbitrary object, ...).
        InvalidInputError: NaN or infinity, a circular reference, nesting
            deeper than the interpreter's recursion limit, a lone surrogate,
            or an encoded size over ``max_size`` bytes.
    """
    try:
        text = _encoder.encode(value)
    except TypeError as exc:
        raise InvalidTypeError(
            f"{what} holds a {exc.args[0] if exc.args else 'value'} object; allowed are "
            "dict (str keys), list, tuple, str, int, float, bool, None and bytes-like objects"
        ) from None
    except RecursionError:
        raise InvalidInputError(
            f"{what} is nested too deeply to encode; nesting must stay well below "
            f"Python's recursion limit ({sys.getrecursionlimit()})"
        ) from None
    except ValueError as exc:
        if "ircular" in str(exc):
            raise InvalidInputError(
                f"{what} contains a circular reference; values must be trees of JSON types"
            ) from None
        raise InvalidInputError(
            f"{what} holds NaN or infinity, which JSON cannot represent; use finite numbers"
        ) from None
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} contains a lone surrogate (U+{ord(text[exc.start]):04X}), "
            "which UTF-8 cannot store; strings must be valid Unicode"
        ) from None
    if len(data) > max_size:
        raise InvalidInputError(
            f"{what} encodes to {len(data):,} bytes; the limit is {max_size:,} "
            "(raise max_value_size to allow more)"
        )
    return data


def _buffer_hook(obj: dict[str, Any]) -> Any:
    # The forms Baileys' BufferJSON.reviver accepts: {"type": "Buffer", "data": ...}
    # (base64 or a list of ints, extra keys allowed) and {"buffer": true, "value": ...}.
    if obj.get("type") == "Buffer" or obj.get("buffer") is True:
        data = obj["data"] if "data" in obj else obj.get("value")
        if isinstance(data, str):
            return base64.b64decode(data, validate=True)
        if isinstance(data, list):
            return bytes(data)
    return obj


def decode_value(data: bytes | bytearray | memoryview, *, what: str) -> Any:
    """Decode a stored value; Buffer objects come back as ``bytes``.

    Raises:
        DecodeError: the data is not UTF-8 BufferJSON.
    """
    try:
        return json.loads(bytes(data), object_hook=_buffer_hook)
    except (ValueError, TypeError, RecursionError, binascii.Error) as exc:
        raise DecodeError(f"{what} is not valid BufferJSON ({type(exc).__name__})") from None


def encode_creds(creds: object, *, session_id: str, max_size: int) -> bytes:
    """Validate and encode a creds document (a mapping)."""
    if not isinstance(creds, Mapping):
        raise InvalidTypeError(
            f"creds for session {session_id!r} must be a mapping (dict), not {type(creds).__name__}"
        )
    return encode_value(creds, what=f"creds of session {session_id!r}", max_size=max_size)


KeyRow = tuple[str, str, "bytes | None"]
"""One entry of a key batch: (category, key id, encoded value or None to delete)."""


def encode_key_batch(data: object, *, max_size: int) -> list[KeyRow]:
    """Validate and encode a whole ``set_keys`` batch before anything is written.

    ``data`` is ``{category: {key_id: value | None}}``. Ids that normalise to
    the same stored id (``7`` and ``"7"``) keep the last value given.

    Raises:
        InvalidTypeError / InvalidInputError: the first problem found; nothing
            of the batch may be written then.
    """
    if not isinstance(data, Mapping):
        raise InvalidTypeError(
            "key data must be a mapping {category: {key_id: value or None}}, "
            f"not {type(data).__name__}"
        )
    rows: dict[tuple[str, str], bytes | None] = {}
    for category, entries in data.items():
        category = check_category(category)
        if not isinstance(entries, Mapping):
            raise InvalidTypeError(
                f"keys of category {category!r} must be a mapping {{key_id: value or None}}, "
                f"not {type(entries).__name__}"
            )
        for key_id, value in entries.items():
            key_id = check_key_id(key_id)
            rows[category, key_id] = (
                None
                if value is None
                else encode_value(
                    value, what=f"value of {category} key {key_id!r}", max_size=max_size
                )
            )
    return [(category, key_id, blob) for (category, key_id), blob in rows.items()]
