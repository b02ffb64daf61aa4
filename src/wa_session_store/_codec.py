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
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
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


_b2a = binascii.b2a_base64

if sys.version_info >= (3, 11):

    def _a2b(text: str) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)

else:  # pragma: no cover - Python 3.10

    def _a2b(text: str) -> bytes:
        return base64.b64decode(text, validate=True)


def _default(obj: object) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"type": "Buffer", "data": _b2a(obj, newline=False).decode("ascii")}
    raise TypeError(type(obj).__name__)


def _make_encoder() -> Callable[[object], str]:
    """The C JSON encoder, built once (``JSONEncoder.encode`` builds one per call).

    Without circular-reference markers: a value that refers to itself recurses
    until the interpreter's limit, which is reported as too deep.
    """
    maker = getattr(json.encoder, "c_make_encoder", None)
    if maker is not None:
        try:
            iterencode = maker(
                None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, False
            )
            if "".join(iterencode({"k": b"\x00"}, 0)) == '{"k":{"type":"Buffer","data":"AA=="}}':
                return lambda value: "".join(iterencode(value, 0))
        except (TypeError, ValueError):  # pragma: no cover - another interpreter's encoder
            pass
    fallback = json.JSONEncoder(  # pragma: no cover - interpreters without the C encoder
        ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
    )
    return fallback.encode  # pragma: no cover


_encode_text = _make_encoder()
_encode_str = json.encoder.encode_basestring


def _flat_buffers(value: object) -> str | None:
    """The JSON of a ``{str: bytes}`` dict — a key pair, the commonest value — or None.

    The same text the general encoder writes, built without a Python call
    back per bytes object: most of a first pairing's 812 pre-keys go this way.
    """
    if type(value) is not dict or not value:
        return None
    parts = []
    for key, item in value.items():
        if type(key) is not str or type(item) is not bytes:
            return None
        data = _b2a(item, newline=False).decode("ascii")
        parts.append(f'{_encode_str(key)}:{{"type":"Buffer","data":"{data}"}}')
    return "{" + ",".join(parts) + "}"


def _named(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


def encode_value(
    value: object, *, what: str | Callable[[], str], max_size: int = DEFAULT_MAX_VALUE_SIZE
) -> bytes:
    """Encode one value as UTF-8 BufferJSON.

    ``what`` names the value in error messages (e.g. ``"value of pre-key 7"``),
    or is a callable returning that name; it must not contain the value itself.

    Raises:
        InvalidTypeError: a type JSON cannot hold (set, arbitrary object, ...).
        InvalidInputError: NaN or infinity, a circular reference or nesting
            deeper than the interpreter's recursion limit, a lone surrogate,
            or an encoded size over ``max_size`` bytes.
    """
    try:
        text = _flat_buffers(value) or _encode_text(value)
    except TypeError as exc:
        raise InvalidTypeError(
            f"{_named(what)} holds a {exc.args[0] if exc.args else 'value'} object; allowed are "
            "dict (str keys), list, tuple, str, int, float, bool, None and bytes-like objects"
        ) from None
    except RecursionError:
        raise InvalidInputError(
            f"{_named(what)} is nested too deeply, or refers to itself; values must be trees "
            f"nested well below Python's recursion limit ({sys.getrecursionlimit()})"
        ) from None
    except ValueError:
        raise InvalidInputError(
            f"{_named(what)} holds NaN or infinity, which JSON cannot represent; use finite numbers"
        ) from None
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{_named(what)} contains a lone surrogate (U+{ord(text[exc.start]):04X}), "
            "which UTF-8 cannot store; strings must be valid Unicode"
        ) from None
    if len(data) > max_size:
        raise InvalidInputError(
            f"{_named(what)} encodes to {len(data):,} bytes; the limit is {max_size:,} "
            "(raise max_value_size to allow more)"
        )
    return data


def _buffer_hook(obj: dict[str, Any]) -> Any:
    # The forms Baileys' BufferJSON.reviver accepts: {"type": "Buffer", "data": ...}
    # (base64 or a list of ints, extra keys allowed) and {"buffer": true, "value": ...}.
    if obj.get("type") == "Buffer" or obj.get("buffer") is True:
        data = obj["data"] if "data" in obj else obj.get("value")
        if isinstance(data, str):
            return _a2b(data)
        if isinstance(data, list):
            return bytes(data)
    return obj


_decoder = json.JSONDecoder(object_hook=_buffer_hook)


def decode_value(data: bytes | bytearray | memoryview, *, what: str | Callable[[], str]) -> Any:
    """Decode a stored value; Buffer objects come back as ``bytes``.

    Raises:
        DecodeError: the data is not UTF-8 BufferJSON.
    """
    try:
        return _decoder.decode(bytes(data).decode("utf-8"))
    except (ValueError, TypeError, RecursionError, binascii.Error) as exc:
        raise DecodeError(
            f"{_named(what)} is not valid BufferJSON ({type(exc).__name__})"
        ) from None


def encode_creds(creds: object, *, session_id: str, max_size: int) -> bytes:
    """Validate and encode a creds document (a mapping)."""
    if not isinstance(creds, Mapping):
        raise InvalidTypeError(
            f"creds for session {session_id!r} must be a mapping (dict), not {type(creds).__name__}"
        )
    return encode_value(creds, what=f"creds of session {session_id!r}", max_size=max_size)


def _key_value_name(category: str, key_id: str) -> str:
    return f"value of {category} key {key_id!r}"


KeyRow = tuple[str, str, "bytes | None"]
"""One entry of a key batch: (category, key id, encoded value or None to delete)."""


def key_batch_entries(data: object) -> Iterator[tuple[str, str, object]]:
    """``(category, key_id, value)`` for every entry of ``{category: {key_id: value}}``,
    the category and id validated (an int id becomes its ``str()``).

    Raises:
        InvalidTypeError / InvalidInputError: the first problem found.
    """
    if not isinstance(data, Mapping):
        raise InvalidTypeError(
            "key data must be a mapping {category: {key_id: value or None}}, "
            f"not {type(data).__name__}"
        )
    for category, entries in data.items():
        category = check_category(category)
        if not isinstance(entries, Mapping):
            raise InvalidTypeError(
                f"keys of category {category!r} must be a mapping {{key_id: value or None}}, "
                f"not {type(entries).__name__}"
            )
        for key_id, value in entries.items():
            yield category, check_key_id(key_id), value


def encode_key_batch(data: object, *, max_size: int) -> list[KeyRow]:
    """Validate and encode a whole ``set_keys`` batch before anything is written.

    ``data`` is ``{category: {key_id: value | None}}``. Ids that normalise to
    the same stored id (``7`` and ``"7"``) keep the last value given.

    Raises:
        InvalidTypeError / InvalidInputError: the first problem found; nothing
            of the batch may be written then.
    """
    rows: dict[tuple[str, str], bytes | None] = {}
    for category, key_id, value in key_batch_entries(data):
        rows[category, key_id] = (
            None
            if value is None
            else encode_value(
                value, what=partial(_key_value_name, category, key_id), max_size=max_size
            )
        )
    return [(category, key_id, blob) for (category, key_id), blob in rows.items()]
