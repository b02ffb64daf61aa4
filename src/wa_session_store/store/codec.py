"""Encoding and decoding of values, and of whole creds documents and key
batches: pure functions, no I/O. (The ids they are stored under are checked
by :mod:`~wa_session_store.store.ids`.)

Values are stored as UTF-8 JSON in the BufferJSON dialect of Baileys: bytes
become ``{"type": "Buffer", "data": "<base64>"}``. The legacy form with a list
of ints as ``data`` is read too. Encoding runs in the C JSON encoder; only
bytes-like objects reach Python code, through ``default``.

One rule decides what is accepted: a value must read back equal (tuples come
back as lists, bytes-like objects as ``bytes``). After encoding, one walk of
the value (:func:`_tree_problem`) refuses the rest of what the decoder would
reinterpret: dicts the Buffer hook would turn into bytes
(:func:`_reads_as_bytes`, the hook's own test on the writer's side), dict keys
that are not str, and nesting deeper than :data:`MAX_NESTING`, which the
decoder may not manage from a deeper call stack than the writer's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, Final

from ..errors import DecodeError, InvalidInputError, InvalidTypeError
from .ids import check_category, check_key_id

#: Default limit of one encoded value (creds document or key), in bytes.
DEFAULT_MAX_VALUE_SIZE: Final = 64 * 1024 * 1024
#: The highest ``max_value_size`` any store accepts, and the most bytes one
#: write (a key batch, an imported session) may carry, on every backend: below
#: PostgreSQL's 1 GB limit of a value and of a message, and SQLite's 1e9 bytes.
MAX_WRITE_SIZE: Final = 512 * 1024 * 1024
#: The deepest nesting of lists and dicts a value may have. The decoder
#: recurses once per level, on whatever stack the reader has; at most 100
#: levels (as Ruby's JSON parser allows) leave room for any reader, while
#: WhatsApp documents nest fewer than 10.
MAX_NESTING: Final = 100

_b2a = binascii.b2a_base64

if sys.version_info >= (3, 11):
    # Called with strict_mode=True directly: a partial holding the keyword
    # costs a fifth of a restore's decoding (a dict of kwargs per Buffer).
    _a2b: Callable[..., bytes] = binascii.a2b_base64

else:  # pragma: no cover - Python 3.10

    def _a2b(text: str, strict_mode: bool = True) -> bytes:
        return base64.b64decode(text, validate=strict_mode)


def _default(obj: object) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return {"type": "Buffer", "data": _b2a(obj, newline=False).decode("ascii")}
    if isinstance(obj, memoryview):
        # Only a flat view of unsigned bytes equals the bytes it reads back as
        # (a view of ints or signed chars does not); a strided one is copied.
        if obj.format != "B" or obj.ndim != 1:
            raise TypeError(f"{obj.ndim}-dimensional memoryview of format {obj.format!r}")
        data = obj if obj.c_contiguous else obj.tobytes()
        return {"type": "Buffer", "data": _b2a(data, newline=False).decode("ascii")}
    raise TypeError(f"{type(obj).__name__} object")


def _make_encoder(ascii_only: bool = False) -> Callable[[object], str]:
    """The C JSON encoder, built once (``JSONEncoder.encode`` builds one per call).

    Without circular-reference markers: a value that refers to itself recurses
    until the interpreter's limit, which is reported as too deep. With
    ``ascii_only``, every non-ASCII character is written as a ``\\uXXXX``
    escape, as ``JSON.stringify`` writes a lone surrogate.
    """
    maker = getattr(json.encoder, "c_make_encoder", None)
    strings = json.encoder.encode_basestring_ascii if ascii_only else json.encoder.encode_basestring
    if maker is not None:
        try:
            iterencode = maker(None, _default, strings, None, ":", ",", False, False, False)
            if "".join(iterencode({"k": b"\x00"}, 0)) == '{"k":{"type":"Buffer","data":"AA=="}}':
                return lambda value: "".join(iterencode(value, 0))
        except (TypeError, ValueError):  # pragma: no cover - another interpreter's encoder
            pass
    fallback = json.JSONEncoder(  # pragma: no cover - interpreters without the C encoder
        ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":"), default=_default
    )
    return fallback.encode  # pragma: no cover


_encode_text = _make_encoder()
_encode_ascii = _make_encoder(ascii_only=True)


def _reads_as_bytes(obj: Mapping[Any, Any]) -> bool:
    """Whether the decoder's Buffer hook turns this dict, once encoded, into bytes.

    The writer's side of :func:`_buffer_hook`: marked ``"type": "Buffer"`` or
    ``"buffer": true``, with a str or a list (a tuple is written as one) in
    ``data``, or else in ``value``. Such a dict would come back as bytes (or
    not at all, its base64 being invalid), and its other keys would be lost.
    """
    marker = obj.get("type")
    if not (isinstance(marker, str) and marker == "Buffer") and obj.get("buffer") is not True:
        return False
    data = obj["data"] if "data" in obj else obj.get("value")
    return isinstance(data, (str, list, tuple))


def _tree_problem(value: object) -> tuple[str, object] | None:
    """What in ``value`` would not read back equal, and the container holding it; or None.

    One walk, level by level: ``("key", dict)`` for a dict key that is not a
    str (JSON keys are strings: ``{1: a}`` would come back as ``{"1": a}``,
    ``{None: a, "null": b}`` with one entry), ``("buffer", dict)`` for a dict
    the decoder reads as bytes, ``("depth", container)`` for nesting deeper
    than :data:`MAX_NESTING`.
    """
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > MAX_NESTING:
            return "depth", level[0]
        below: list[object] = []
        push = below.extend
        for item in level:
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str):
                        return "key", item
                if ("type" in item or "buffer" in item) and _reads_as_bytes(item):
                    return "buffer", item
                push(v for v in item.values() if isinstance(v, (dict, list, tuple)))
            elif isinstance(item, (list, tuple)):
                push(v for v in item if isinstance(v, (dict, list, tuple)))
        level = below
    return None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _path_to(value: object, target: object) -> str:
    """Where ``target`` (a container inside ``value``) is, e.g. ``['noiseKey']['private']``.

    Only for messages: a dict key that does not look like a field name (it
    might be key material, such as a base64 id) is shown as ``[...]``.
    """
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if item is target:
            return path or "the top level"
        if len(path) > 400:
            continue
        if isinstance(item, dict):
            for key, child in item.items():
                shown = repr(key) if isinstance(key, str) and _NAME.fullmatch(key) else "..."
                stack.append((child, f"{path}[{shown}]"))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return "a nested value"  # pragma: no cover - target comes from value


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

    Only what decodes back to an equal value is accepted (except that tuples
    come back as lists and bytes-like objects as ``bytes``). Strings holding
    lone surrogates are stored losslessly, as JSON escapes (as Baileys does).

    Raises:
        InvalidTypeError: a type JSON cannot hold (set, arbitrary object, a
            memoryview that is not a flat view of unsigned bytes, ...), or a
            dict key that is not a str.
        InvalidInputError: a dict the decoder would read as bytes (shaped
            like a Buffer: ``{"type": "Buffer", "data": <str or list>}`` or
            ``{"buffer": True, "value": ...}``, extra keys or not), NaN or
            infinity, an int of more digits than
            ``sys.get_int_max_str_digits()``, nesting deeper than
            :data:`MAX_NESTING` (100) levels or a circular reference, or an
            encoded size over ``max_size`` bytes.
    """
    text = _flat_buffers(value)
    if text is None:
        text = _encode_tree(value, what)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate, which UTF-8 cannot carry. Baileys writes one as a
        # JSON escape ("\\ud83e") and reads it back; so does this, losslessly.
        data = _encode_ascii(value).encode("ascii")
    if len(data) > max_size:
        raise InvalidInputError(
            f"{_named(what)} encodes to {len(data):,} bytes; the limit is {max_size:,} "
            "(raise max_value_size to allow more)"
        )
    return data


def _encode_tree(value: object, what: str | Callable[[], str]) -> str:
    try:
        text = _encode_text(value)
    except TypeError as exc:
        raise InvalidTypeError(
            f"{_named(what)} holds a {exc.args[0] if exc.args else 'value'}; allowed are dict "
            "(str keys), list, tuple, str, int, float, bool, None, bytes, bytearray and "
            "memoryview (flat, of unsigned bytes)"
        ) from None
    except RecursionError:
        raise InvalidInputError(
            f"{_named(what)} is nested too deeply, or holds itself; values must be trees "
            f"of lists and dicts at most {MAX_NESTING} levels deep"
        ) from None
    except ValueError as exc:
        if "digits" in str(exc):  # Python's int-to-str limit (sys.get_int_max_str_digits)
            raise InvalidInputError(
                f"{_named(what)} holds an int of more than {sys.get_int_max_str_digits():,} "
                "digits, which could not be read back; ints of up to that many digits are "
                "allowed: store a bigger number as a str or bytes"
            ) from None
        raise InvalidInputError(
            f"{_named(what)} holds NaN or infinity, which JSON cannot represent; use finite numbers"
        ) from None
    problem = _tree_problem(value)
    if problem is not None:
        raise _refusal(_named(what), value, *problem)
    return text


def _refusal(name: str, value: object, kind: str, where: object) -> InvalidInputError:
    """The error for a problem :func:`_tree_problem` found; never quotes a value."""
    if kind == "depth":
        return InvalidInputError(
            f"{name} is nested too deeply: at most {MAX_NESTING} levels of lists and dicts "
            "are allowed, so that every reader can decode it"
        )
    path = _path_to(value, where)
    if kind == "key":
        assert isinstance(where, dict)
        key_type = next(type(k) for k in where if not isinstance(k, str))
        return InvalidTypeError(
            f"{name} holds a dict key of type {key_type.__name__} at {path}; JSON keys are "
            "strings, so it would come back as a different key (or merge with another): "
            "use str keys"
        )
    return InvalidInputError(
        f"{name} holds a dict at {path} shaped like a BufferJSON Buffer "
        '({"type": "Buffer", "data": <str or list>} or {"buffer": true, "value": ...}), '
        "which would be read back as bytes, not as that dict; use bytes, bytearray or "
        "memoryview for binary data, and other keys for a dict"
    )


def _buffer_hook(obj: dict[str, Any]) -> Any:
    # The forms Baileys' BufferJSON.reviver accepts: {"type": "Buffer", "data": ...}
    # (base64 or a list of ints, extra keys allowed) and {"buffer": true, "value": ...}.
    # Called for every object of every document: "in" before indexing, no
    # method calls for the objects that are not Buffers. The writer refuses
    # what this turns into bytes by the same test (_reads_as_bytes); a
    # property test in tests/test_codec.py holds the two together.
    if ("type" in obj and obj["type"] == "Buffer") or ("buffer" in obj and obj["buffer"] is True):
        data = obj["data"] if "data" in obj else obj.get("value")
        if isinstance(data, str):
            return _a2b(data, strict_mode=True)
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


def given_twice(category: str, key_id: str) -> InvalidInputError:
    """The error for a batch naming one key twice (``7`` and ``"7"``) with different values."""
    return InvalidInputError(
        f"{category} key {key_id!r} is given twice (as an int and as a str) "
        "with different values; give each key once"
    )


def encode_key_batch(data: object, *, max_size: int) -> list[KeyRow]:
    """Validate and encode a whole ``set_keys`` batch before anything is written.

    ``data`` is ``{category: {key_id: value | None}}``. Ids that normalise to
    the same stored id (``7`` and ``"7"``) must carry the same value: if they
    do not, the batch is refused rather than one of them silently dropped.

    Raises:
        InvalidTypeError / InvalidInputError: the first problem found; nothing
            of the batch may be written then.
    """
    rows: dict[tuple[str, str], bytes | None] = {}
    for category, key_id, value in key_batch_entries(data):
        blob = (
            None
            if value is None
            else encode_value(
                value, what=partial(_key_value_name, category, key_id), max_size=max_size
            )
        )
        if (category, key_id) in rows and rows[category, key_id] != blob:
            raise given_twice(category, key_id)
        rows[category, key_id] = blob
    return [(category, key_id, blob) for (category, key_id), blob in rows.items()]
