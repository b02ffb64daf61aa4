"""The ids a store keys its rows by: session ids, key categories and key ids.

Pure checks, no I/O, shared by every backend (and by the auth state, the
Baileys folders and the command line), so no backend accepts an id another
refuses. Each returns the id as it is stored (an int key id becomes its
``str()``) or raises an error that says what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from ..errors import InvalidInputError, InvalidTypeError

__all__ = [
    "MAX_CATEGORY_LENGTH",
    "MAX_KEY_ID_BYTES",
    "MAX_KEY_ID_LENGTH",
    "MAX_SESSION_ID_LENGTH",
    "check_category",
    "check_key_id",
    "check_key_ids",
    "check_name",
    "check_session_id",
]

MAX_SESSION_ID_LENGTH: Final = 255
MAX_CATEGORY_LENGTH: Final = 64
MAX_KEY_ID_LENGTH: Final = 1024
#: The most UTF-8 bytes of a key id, on every backend: with the longest session
#: id and category, the row's key stays within PostgreSQL's btree entry limit
#: (about 2,700 bytes), so no backend accepts an id that another refuses.
MAX_KEY_ID_BYTES: Final = 1024
# C0 and C1 control characters, DEL, and lone surrogates (which UTF-8 cannot carry).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _describe_char(text: str) -> str:
    match = _FORBIDDEN.search(text)
    assert match is not None
    code = ord(match.group())
    kind = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    return f"{kind} (U+{code:04X}) at position {match.start()}"


def check_name(what: str, value: object, limit: int) -> str:
    """Return ``value`` if it is a str of 1 to ``limit`` characters without a control
    character or a lone surrogate; ``what`` names it in the error."""
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
    return check_name("session id", session_id, MAX_SESSION_ID_LENGTH)


def check_category(category: object) -> str:
    """Return ``category`` if it is a valid key category (1 to 64 characters)."""
    return check_name("key category", category, MAX_CATEGORY_LENGTH)


# An int key id's str() must fit MAX_KEY_ID_LENGTH digits; checked on its bits
# first, since str() of an int of more than 4,300 digits raises ValueError.
_MAX_INT_ID_BITS: Final = int(MAX_KEY_ID_LENGTH * 3.33) + 8


def check_key_id(key_id: object) -> str:
    """Return the key id as stored: a str as is, an int as its ``str()``.

    Raises:
        InvalidTypeError: neither a str nor an int.
        InvalidInputError: empty, over 1,024 characters or 1,024 UTF-8 bytes,
            or holding a control character or a lone surrogate.
    """
    if isinstance(key_id, int) and not isinstance(key_id, bool):
        if key_id.bit_length() > _MAX_INT_ID_BITS:
            raise InvalidInputError(
                f"key id is an int of {key_id.bit_length():,} bits; as a str it may have "
                f"at most {MAX_KEY_ID_LENGTH} characters"
            )
        key_id = str(key_id)
    text = check_name("key id", key_id, MAX_KEY_ID_LENGTH)
    if not text.isascii():
        size = len(text.encode("utf-8"))
        if size > MAX_KEY_ID_BYTES:
            raise InvalidInputError(
                f"key id is {size:,} bytes long in UTF-8 ({len(text)} characters); at most "
                f"{MAX_KEY_ID_BYTES} bytes are allowed on every backend"
            )
    return text


def check_key_ids(ids: object) -> list[str]:
    """Validate the ids of a ``get_keys`` call, keeping their order, without duplicates."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidTypeError(
            f"ids must be an iterable of str or int key ids, not {type(ids).__name__}"
        )
    return list(dict.fromkeys(check_key_id(key_id) for key_id in ids))
