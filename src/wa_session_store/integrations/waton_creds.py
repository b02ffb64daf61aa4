"""waton's ``AuthCreds`` as a stored creds document, and back.

waton keeps its creds in a dataclass of plain values: key pairs are dicts
``{"private", "public"}`` of bytes, the signed pre-key ``{"keyPair",
"signature", "keyId"}`` (Baileys' shape), ``me`` and ``account`` dicts.
:func:`creds_to_document` stores each field under Baileys' camelCase name
(:data:`FIELD_NAMES`), so the library's tools read it like any other session
(``wa-session-store show``, the default ``urgent`` predicate watching
``nextPreKeyId``), and keeps each value as waton holds it: bytes stay bytes,
dicts and lists are deep copies. Optional fields that are None are left
out. :func:`creds_from_document` reads those names, and waton's own
snake_case ones, checking the types of the fields waton computes with
(errors name fields, never values); absent or null fields take waton's
defaults.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

try:
    from waton.utils.auth import AuthCreds
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wa_session_store.integrations.waton_creds needs waton (Python >= 3.11): "
        "pip install 'wa-session-store[waton]'"
    ) from exc

from ..errors import InvalidTypeError
from . import creds_fields as fields

__all__ = ["FIELD_NAMES", "creds_from_document", "creds_to_document"]

FIELD_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {spec.name: fields.camel(spec.name) for spec in dataclasses.fields(AuthCreds)}
)
"""waton's ``AuthCreds`` attribute -> key in the stored document (Baileys' camelCase
name; ``server_hashes``, which Baileys lacks, becomes ``serverHashes``)."""

_KNOWN: Final = frozenset(FIELD_NAMES) | frozenset(FIELD_NAMES.values())
_KEY_PAIRS: Final = ("noise_key", "pairing_ephemeral_key_pair", "signed_identity_key")
_BYTES: Final = ("routing_info",)


# -- checks that hold both ways -----------------------------------------------


def _key_pair(
    value: object, where: str, as_bytes: Callable[[object, str], bytes]
) -> dict[str, Any]:
    """A copy of the key pair ``value``, its ``public`` and ``private`` bytes checked."""
    pair = dict(copy.deepcopy(fields.mapping_in(value, where)))
    for half in ("public", "private"):
        name = f"{where}.{half}"
        pair[half] = as_bytes(fields.required(pair, half, half, name), name)
    return pair


def _signed_pre_key(
    value: object, where: str, as_bytes: Callable[[object, str], bytes]
) -> dict[str, Any]:
    key = dict(copy.deepcopy(fields.mapping_in(value, where)))
    key["keyPair"] = _key_pair(
        fields.required(key, "keyPair", "key_pair", f"{where}.keyPair"),
        f"{where}.keyPair",
        as_bytes,
    )
    key.pop("key_pair", None)
    key["signature"] = as_bytes(
        fields.required(key, "signature", "signature", f"{where}.signature"), f"{where}.signature"
    )
    key["keyId"] = fields.int_in(
        fields.required(key, "keyId", "key_id", f"{where}.keyId"), f"{where}.keyId"
    )
    key.pop("key_id", None)
    return key


# -- creds -> document --------------------------------------------------------


def creds_to_document(creds: AuthCreds, *, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The creds document to store for waton's ``creds`` (Baileys' field names).

    Args:
        creds: waton's ``AuthCreds``.
        base: the document the creds were loaded from: its fields that
            waton does not have are carried over, so nothing another client
            stored is dropped.

    Raises:
        InvalidTypeError: ``creds`` is not an ``AuthCreds``, or a key pair,
            the signed pre-key or ``routing_info`` holds something other than
            bytes where bytes belong (no value is put in the message).
    """
    if not isinstance(creds, AuthCreds):
        raise InvalidTypeError(f"creds must be a waton AuthCreds, not {type(creds).__name__}")
    if base is not None and not isinstance(base, Mapping):
        raise InvalidTypeError(f"base must be a mapping or None, not {type(base).__name__}")
    doc: dict[str, Any] = {}
    for attr, name in FIELD_NAMES.items():
        value = getattr(creds, attr)
        if value is None:
            continue
        if attr in _KEY_PAIRS:
            value = _key_pair(value, attr, fields.bytes_out)
        elif attr == "signed_pre_key":
            value = _signed_pre_key(value, attr, fields.bytes_out)
        elif attr in _BYTES:
            value = fields.bytes_out(value, attr)
        else:
            value = copy.deepcopy(value)
        doc[name] = value
    return fields.carry(doc, base, _KNOWN)


# -- document -> creds --------------------------------------------------------


def _adv_secret(value: object, where: str) -> str:
    # A Buffer where waton keeps base64 text: as waton's own storages read it.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return fields.str_in(value, where)


def _list_in(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise fields.type_error(where, "a list", value)
    return copy.deepcopy(value)


def _dict_in(value: object, where: str) -> dict[str, Any]:
    return dict(copy.deepcopy(fields.mapping_in(value, where)))


_CONVERT: Final[Mapping[str, Callable[[object, str], Any]]] = MappingProxyType(
    {
        **dict.fromkeys(_KEY_PAIRS, lambda value, where: _key_pair(value, where, fields.bytes_in)),
        "signed_pre_key": lambda value, where: _signed_pre_key(value, where, fields.bytes_in),
        "registration_id": fields.int_in,
        "adv_secret_key": _adv_secret,
        "next_pre_key_id": fields.int_in,
        "first_unuploaded_pre_key_id": fields.int_in,
        "account_sync_counter": fields.int_in,
        "registered": fields.bool_in,
        "routing_info": fields.bytes_in,
        "pairing_code": fields.str_in,
        "last_prop_hash": fields.str_in,
        "platform": fields.str_in,
        "processed_history_messages": _list_in,
        "signal_identities": _list_in,
        "server_hashes": _list_in,
        "account_settings": _dict_in,
        "additional_data": _dict_in,
        "account": _dict_in,
        "me": _dict_in,
    }
)


def creds_from_document(doc: Mapping[str, Any]) -> AuthCreds:
    """waton's ``AuthCreds`` for a stored creds document.

    Reads Baileys' camelCase names (what :func:`creds_to_document` writes)
    and waton's snake_case ones. The key pairs, the signed pre-key,
    ``registrationId`` and ``advSecretKey`` are required; other fields that
    are absent or null take waton's defaults. Fields waton does not have are
    ignored here (pass the document as ``base`` to :func:`creds_to_document`
    to keep them).

    Raises:
        InvalidTypeError: ``doc`` is not a mapping, or a field has the wrong type.
        InvalidInputError: a required field is missing. Messages name fields, never values.
    """
    if not isinstance(doc, Mapping):
        raise InvalidTypeError(f"creds document must be a mapping, not {type(doc).__name__}")
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(AuthCreds):
        name = FIELD_NAMES[spec.name]
        has_default = (
            spec.default is not dataclasses.MISSING
            or spec.default_factory is not dataclasses.MISSING
        )
        if not has_default:
            value = fields.required(doc, name, spec.name, name)
        else:
            value = fields.get(doc, name, spec.name)
            if value is fields.MISSING or value is None:
                continue  # waton's default
        convert = _CONVERT.get(spec.name)
        # A field a later waton adds: taken as stored.
        values[spec.name] = copy.deepcopy(value) if convert is None else convert(value, name)
    return AuthCreds(**values)
