"""Fields of a stored creds document, read and written for a client binding's converter.

The pieces every creds converter needs (:mod:`.pyaileys_creds`,
:mod:`.waton_creds`, one of your own): reading a field under its stored
name or the client's own spelling, type checks whose errors name the field
and never its value, and carrying over the fields of a loaded document
that the converter does not know, so nothing another client stored is
dropped. No I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..errors import InvalidInputError, InvalidTypeError

__all__ = [
    "MISSING",
    "bool_in",
    "bytes_in",
    "bytes_out",
    "camel",
    "carry",
    "get",
    "int_in",
    "mapping_in",
    "optional",
    "required",
    "str_in",
    "sub",
    "type_error",
]

#: What :func:`get` returns for a field the document does not have.
MISSING: Final[Any] = object()


def camel(name: str) -> str:
    """``snake_case`` as Baileys' ``camelCase``."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# -- creds -> document --------------------------------------------------------


def carry(doc: dict[str, Any], base: object, known: frozenset[str]) -> dict[str, Any]:
    """Copy the fields of ``base`` not in ``known`` (nor already in ``doc``) into ``doc``."""
    if isinstance(base, Mapping):
        for name, value in base.items():
            if name not in known and name not in doc:
                doc[name] = copy.deepcopy(value)
    return doc


def sub(base: Mapping[str, Any] | None, name: str) -> object:
    """``base[name]``, or None (no base, or no such field)."""
    return base.get(name) if base is not None else None


def bytes_out(value: object, where: str) -> bytes:
    """``value`` as bytes for the document (InvalidTypeError naming ``where`` if it is not)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidTypeError(f"creds {where} must be bytes, not {type(value).__name__}")


# -- document -> creds --------------------------------------------------------


def get(doc: Mapping[str, Any], name: str, snake: str) -> Any:
    """``doc[name]``, else the client's own spelling ``doc[snake]``, else :data:`MISSING`."""
    if name in doc:
        return doc[name]
    return doc.get(snake, MISSING)


def type_error(where: str, expected: str, value: object) -> InvalidTypeError:
    """The error for field ``where`` holding a ``value`` that is not ``expected``."""
    return InvalidTypeError(
        f"creds document field {where!r} must be {expected}, not {type(value).__name__}"
    )


def required(doc: Mapping[str, Any], name: str, snake: str, where: str) -> Any:
    """The field's value; InvalidInputError when it is absent or null."""
    value = get(doc, name, snake)
    if value is MISSING or value is None:
        raise InvalidInputError(f"creds document has no {where!r}; it is required")
    return value


def mapping_in(value: object, where: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping (an object), else InvalidTypeError."""
    if not isinstance(value, Mapping):
        raise type_error(where, "an object", value)
    return value


def bytes_in(value: object, where: str) -> bytes:
    """``value`` as bytes, if it is bytes (a Buffer), else InvalidTypeError."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise type_error(where, "bytes (a Buffer)", value)


def int_in(value: object, where: str) -> int:
    """``value`` if it is an int (or a float without a fraction; not a bool)."""
    if isinstance(value, bool):
        raise type_error(where, "an int", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise type_error(where, "an int", value)


def str_in(value: object, where: str) -> str:
    """``value`` if it is a str, else InvalidTypeError."""
    if isinstance(value, str):
        return value
    raise type_error(where, "a str", value)


def bool_in(value: object, where: str) -> bool:
    """``value`` if it is a bool, else InvalidTypeError."""
    if isinstance(value, bool):
        return value
    raise type_error(where, "a bool", value)


def optional(value: object, convert: Callable[[object, str], Any], where: str) -> Any:
    """None for an absent or null field, else ``convert(value, where)``."""
    return None if value is MISSING or value is None else convert(value, where)
