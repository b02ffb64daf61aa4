"""pyaileys' ``AuthenticationCreds`` as a stored creds document, and back.

:func:`creds_to_document` writes the document with Baileys' camelCase names
(see :data:`FIELD_NAMES`), so it reads like one written by Baileys and the
default ``urgent`` predicate sees ``nextPreKeyId`` and
``firstUnuploadedPreKeyId`` move; fields of ``base`` it does not know are
carried over, so nothing another client stored is dropped.
:func:`creds_from_document` reads Baileys' names and pyaileys' snake_case
ones, checking every type (errors name fields, never values).
:mod:`wa_session_store.integrations.pyaileys` builds its auth state on them
and re-exports them.

The two directions mirror each other field by field (``_*_out`` and
``_*_in``), so a change to one field is read and made in both at once; the
checks every converter shares are in :mod:`.creds_fields`.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import importlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

try:
    from pyaileys.auth.creds import (
        AccountSettings,
        AuthenticationCreds,
        Contact,
        KeyPair,
        SignedKeyPair,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wa_session_store.integrations.pyaileys_creds needs pyaileys (Python >= 3.11): "
        "pip install 'wa-session-store[pyaileys]'"
    ) from exc

from ..errors import InvalidTypeError
from .creds_fields import (
    MISSING,
    bool_in,
    bytes_in,
    bytes_out,
    camel,
    carry,
    get,
    int_in,
    mapping_in,
    optional,
    required,
    str_in,
    sub,
    type_error,
)

__all__ = [
    "FIELD_NAMES",
    "creds_from_document",
    "creds_to_document",
]

FIELD_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "noise_key": "noiseKey",
        "pairing_ephemeral_key_pair": "pairingEphemeralKeyPair",
        "signed_identity_key": "signedIdentityKey",
        "signed_pre_key": "signedPreKey",
        "registration_id": "registrationId",
        "adv_secret_key": "advSecretKey",
        "me": "me",
        "account": "account",
        "signal_identities": "signalIdentities",
        "my_app_state_key_id": "myAppStateKeyId",
        "first_unuploaded_pre_key_id": "firstUnuploadedPreKeyId",
        "next_pre_key_id": "nextPreKeyId",
        "last_account_sync_timestamp": "lastAccountSyncTimestamp",
        "platform": "platform",
        "processed_history_messages": "processedHistoryMessages",
        "account_sync_counter": "accountSyncCounter",
        "account_settings": "accountSettings",
        "registered": "registered",
        "pairing_code": "pairingCode",
        "last_prop_hash": "lastPropHash",
        "routing_info": "routingInfo",
        "additional_data": "additionalData",
    }
)
"""pyaileys' ``AuthenticationCreds`` attribute -> key in the stored document (Baileys' name)."""

# Nested objects: (document key, pyaileys' snake_case spelling).
_KEY_PAIR_FIELDS = (("public", "public"), ("private", "private"))
_SIGNED_PRE_KEY_FIELDS = (
    ("keyPair", "key_pair"),
    ("signature", "signature"),
    ("keyId", "key_id"),
    ("timestampS", "timestamp_s"),
)
_CONTACT_FIELDS = (("id", "id"), ("name", "name"), ("lid", "lid"))
_ACCOUNT_SETTINGS_FIELDS = (
    ("unarchiveChats", "unarchive_chats"),
    ("defaultDisappearingMode", "default_disappearing_mode"),
)
# Fields of proto ADVSignedDeviceIdentity, as Baileys stores ``account``.
_ACCOUNT_FIELDS = ("details", "accountSignatureKey", "accountSignature", "deviceSignature")


def _known(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Both spellings of every field: what is not in it is carried over as unknown."""
    return frozenset(name for pair in pairs for name in pair)


_TOP_KNOWN = _known(FIELD_NAMES.items())
_KEY_PAIR_KNOWN = _known(_KEY_PAIR_FIELDS)
_SIGNED_PRE_KEY_KNOWN = _known(_SIGNED_PRE_KEY_FIELDS)
_CONTACT_KNOWN = _known(_CONTACT_FIELDS)
_ACCOUNT_SETTINGS_KNOWN = _known(_ACCOUNT_SETTINGS_FIELDS)


# -- creds -> document --------------------------------------------------------


def _key_pair_out(pair: KeyPair, base: object, where: str) -> dict[str, Any]:
    doc = {
        "public": bytes_out(pair.public, f"{where}.public"),
        "private": bytes_out(pair.private, f"{where}.private"),
    }
    return carry(doc, base, _KEY_PAIR_KNOWN)


def _signed_pre_key_out(key: SignedKeyPair, base: object) -> dict[str, Any]:
    base_pair = base.get("keyPair") if isinstance(base, Mapping) else None
    doc: dict[str, Any] = {
        "keyPair": _key_pair_out(key.key_pair, base_pair, "signed_pre_key.key_pair"),
        "signature": bytes_out(key.signature, "signed_pre_key.signature"),
        "keyId": key.key_id,
    }
    if key.timestamp_s is not None:
        doc["timestampS"] = key.timestamp_s
    return carry(doc, base, _SIGNED_PRE_KEY_KNOWN)


def _contact_out(me: Contact, base: object) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": me.id}
    if me.name is not None:
        doc["name"] = me.name
    if me.lid is not None:
        doc["lid"] = me.lid
    # Extra fields (notify, verifiedName, ...) belong to the same account only.
    if isinstance(base, Mapping) and base.get("id") == me.id:
        carry(doc, base, _CONTACT_KNOWN)
    return doc


def _account_settings_out(settings: AccountSettings, base: object) -> dict[str, Any]:
    doc: dict[str, Any] = {"unarchiveChats": settings.unarchive_chats}
    if settings.default_disappearing_mode is not None:
        doc["defaultDisappearingMode"] = copy.deepcopy(settings.default_disappearing_mode)
    return carry(doc, base, _ACCOUNT_SETTINGS_KNOWN)


def _proto() -> Any:
    # The generated module has no static types; pyaileys itself types it as Any.
    return importlib.import_module("pyaileys.proto.WAProto_pb2")


def _encode_account(fields: Mapping[str, Any]) -> bytes:
    message = _proto().ADVSignedDeviceIdentity()
    for name in _ACCOUNT_FIELDS:
        value = fields.get(name)
        if value is not None:
            setattr(message, name, bytes(value))
    return bytes(message.SerializeToString())


def _account_out(account: object) -> object:
    """pyaileys keeps the serialized ADVSignedDeviceIdentity; Baileys keeps its fields."""
    if not isinstance(account, (bytes, bytearray, memoryview)):
        return copy.deepcopy(account)
    raw = bytes(account)
    message = _proto().ADVSignedDeviceIdentity()
    try:
        message.ParseFromString(raw)
    except Exception:
        return raw
    fields = {
        name: bytes(getattr(message, name)) for name in _ACCOUNT_FIELDS if message.HasField(name)
    }
    # Only when the fields give back the very same bytes; else keep the bytes.
    if fields and _encode_account(fields) == raw:
        return fields
    return raw


def creds_to_document(
    creds: AuthenticationCreds, *, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The creds document to store for pyaileys' ``creds`` (Baileys' field names).

    Bytes stay bytes (the store writes them as BufferJSON Buffers), key pairs
    become ``{"public", "private"}``, the signed pre-key ``{"keyPair",
    "signature", "keyId"}`` (and ``"timestampS"`` when set), ``me``
    ``{"id", "name", "lid"}``, ``account`` the fields of the
    ADVSignedDeviceIdentity it serializes (as Baileys stores it; kept as bytes
    if it does not parse back to the same bytes). Optional fields that are
    None are left out, as Baileys' JSON does. Values of no fixed type
    (``signal_identities``, ``processed_history_messages``,
    ``additional_data``, ...) are deep-copied, so the document does not change
    when the client changes its creds later.

    Args:
        creds: pyaileys' ``AuthenticationCreds``.
        base: the document the creds were loaded from. Its fields that this
            module does not know (at the top level, and inside ``me`` of the
            same account, ``accountSettings``, ``signedPreKey`` and key pairs)
            are carried over, so nothing another client stored is dropped.

    Raises:
        InvalidTypeError: ``creds`` is not an ``AuthenticationCreds``, or a
            field holds a type it cannot hold (no value is put in the message).
    """
    if not isinstance(creds, AuthenticationCreds):
        raise InvalidTypeError(
            f"creds must be a pyaileys AuthenticationCreds, not {type(creds).__name__}"
        )
    if base is not None and not isinstance(base, Mapping):
        raise InvalidTypeError(f"base must be a mapping or None, not {type(base).__name__}")
    doc: dict[str, Any] = {
        "noiseKey": _key_pair_out(creds.noise_key, sub(base, "noiseKey"), "noise_key"),
        "pairingEphemeralKeyPair": _key_pair_out(
            creds.pairing_ephemeral_key_pair,
            sub(base, "pairingEphemeralKeyPair"),
            "pairing_ephemeral_key_pair",
        ),
        "signedIdentityKey": _key_pair_out(
            creds.signed_identity_key, sub(base, "signedIdentityKey"), "signed_identity_key"
        ),
        "signedPreKey": _signed_pre_key_out(creds.signed_pre_key, sub(base, "signedPreKey")),
        "registrationId": creds.registration_id,
        "advSecretKey": creds.adv_secret_key,
        "processedHistoryMessages": copy.deepcopy(creds.processed_history_messages),
        "nextPreKeyId": creds.next_pre_key_id,
        "firstUnuploadedPreKeyId": creds.first_unuploaded_pre_key_id,
        "accountSyncCounter": creds.account_sync_counter,
        "accountSettings": _account_settings_out(
            creds.account_settings, sub(base, "accountSettings")
        ),
        "registered": creds.registered,
    }
    optional: dict[str, object] = {
        "pairingCode": creds.pairing_code,
        "lastPropHash": creds.last_prop_hash,
        "routingInfo": (
            None if creds.routing_info is None else bytes_out(creds.routing_info, "routing_info")
        ),
        "additionalData": copy.deepcopy(creds.additional_data),
        "me": None if creds.me is None else _contact_out(creds.me, sub(base, "me")),
        "account": None if creds.account is None else _account_out(creds.account),
        "signalIdentities": copy.deepcopy(creds.signal_identities),
        "platform": creds.platform,
        "myAppStateKeyId": creds.my_app_state_key_id,
        "lastAccountSyncTimestamp": creds.last_account_sync_timestamp,
    }
    doc.update((name, value) for name, value in optional.items() if value is not None)
    # Fields a later pyaileys may add: stored under their camelCase name.
    for spec in dataclasses.fields(creds):
        if spec.name not in FIELD_NAMES:
            value = getattr(creds, spec.name)
            if value is not None:
                doc[camel(spec.name)] = copy.deepcopy(value)
    return carry(doc, base, _TOP_KNOWN)


# -- document -> creds --------------------------------------------------------


def _key_pair_in(value: object, where: str) -> KeyPair:
    doc = mapping_in(value, where)
    return KeyPair(
        public=bytes_in(required(doc, "public", "public", f"{where}.public"), f"{where}.public"),
        private=bytes_in(
            required(doc, "private", "private", f"{where}.private"), f"{where}.private"
        ),
    )


def _signed_pre_key_in(value: object) -> SignedKeyPair:
    where = "signedPreKey"
    doc = mapping_in(value, where)
    return SignedKeyPair(
        key_pair=_key_pair_in(
            required(doc, "keyPair", "key_pair", f"{where}.keyPair"), f"{where}.keyPair"
        ),
        signature=bytes_in(
            required(doc, "signature", "signature", f"{where}.signature"), f"{where}.signature"
        ),
        key_id=int_in(required(doc, "keyId", "key_id", f"{where}.keyId"), f"{where}.keyId"),
        timestamp_s=optional(get(doc, "timestampS", "timestamp_s"), int_in, f"{where}.timestampS"),
    )


def _contact_in(value: object) -> Contact | None:
    if value is MISSING or value is None:
        return None
    doc = mapping_in(value, "me")
    return Contact(
        id=str_in(required(doc, "id", "id", "me.id"), "me.id"),
        name=optional(doc.get("name", MISSING), str_in, "me.name"),
        lid=optional(doc.get("lid", MISSING), str_in, "me.lid"),
    )


def _account_settings_in(value: object) -> AccountSettings:
    if value is MISSING or value is None:
        return AccountSettings()
    doc = mapping_in(value, "accountSettings")
    unarchive = get(doc, "unarchiveChats", "unarchive_chats")
    mode = get(doc, "defaultDisappearingMode", "default_disappearing_mode")
    return AccountSettings(
        unarchive_chats=(
            False
            if unarchive is MISSING or unarchive is None
            else bool_in(unarchive, "accountSettings.unarchiveChats")
        ),
        default_disappearing_mode=None if mode is MISSING else copy.deepcopy(mode),
    )


def _account_in(value: object) -> Any:
    if value is MISSING or value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if (
        isinstance(value, Mapping)
        and value
        and all(name in _ACCOUNT_FIELDS for name in value)
        and all(
            item is None or isinstance(item, (bytes, bytearray, memoryview))
            for item in value.values()
        )
    ):
        # Baileys' form: the ADVSignedDeviceIdentity fields; pyaileys wants its bytes.
        return _encode_account(value)
    return copy.deepcopy(value)


_SNAKE_OF = {camel: snake for snake, camel in FIELD_NAMES.items()}


def _counter_in(doc: Mapping[str, Any], name: str, default: int) -> int:
    value = get(doc, name, _SNAKE_OF[name])
    return default if value is MISSING or value is None else int_in(value, name)


def creds_from_document(doc: Mapping[str, Any]) -> AuthenticationCreds:
    """pyaileys' ``AuthenticationCreds`` for a stored creds document.

    Reads Baileys' camelCase names (what :func:`creds_to_document` writes and
    Baileys stores), and pyaileys' own snake_case spelling too (its
    ``creds.json``). Fields that are absent or null take pyaileys' defaults;
    fields this module does not know are ignored here (pass the document as
    ``base`` to :func:`creds_to_document` to keep them).

    Raises:
        InvalidTypeError: ``doc`` is not a mapping, or a field has the wrong type.
        InvalidInputError: a required field (the key pairs, ``registrationId``,
            ``advSecretKey``) is missing. Messages name fields, never values.
    """
    if not isinstance(doc, Mapping):
        raise InvalidTypeError(f"creds document must be a mapping, not {type(doc).__name__}")
    adv_secret = required(doc, "advSecretKey", "adv_secret_key", "advSecretKey")
    if isinstance(adv_secret, (bytes, bytearray, memoryview)):
        adv_secret = base64.b64encode(adv_secret).decode("ascii")
    history = get(doc, "processedHistoryMessages", "processed_history_messages")
    if history is not MISSING and history is not None and not isinstance(history, list):
        raise type_error("processedHistoryMessages", "a list", history)
    identities = get(doc, "signalIdentities", "signal_identities")
    if identities is not MISSING and identities is not None and not isinstance(identities, list):
        raise type_error("signalIdentities", "a list", identities)
    additional = get(doc, "additionalData", "additional_data")
    extra: dict[str, Any] = {}
    for spec in dataclasses.fields(AuthenticationCreds):
        if spec.name not in FIELD_NAMES:
            value = get(doc, camel(spec.name), spec.name)
            if value is not MISSING:
                extra[spec.name] = copy.deepcopy(value)
    return AuthenticationCreds(
        noise_key=_key_pair_in(required(doc, "noiseKey", "noise_key", "noiseKey"), "noiseKey"),
        pairing_ephemeral_key_pair=_key_pair_in(
            required(
                doc,
                "pairingEphemeralKeyPair",
                "pairing_ephemeral_key_pair",
                "pairingEphemeralKeyPair",
            ),
            "pairingEphemeralKeyPair",
        ),
        signed_identity_key=_key_pair_in(
            required(doc, "signedIdentityKey", "signed_identity_key", "signedIdentityKey"),
            "signedIdentityKey",
        ),
        signed_pre_key=_signed_pre_key_in(
            required(doc, "signedPreKey", "signed_pre_key", "signedPreKey")
        ),
        registration_id=int_in(
            required(doc, "registrationId", "registration_id", "registrationId"),
            "registrationId",
        ),
        adv_secret_key=str_in(adv_secret, "advSecretKey"),
        me=_contact_in(get(doc, "me", "me")),
        account=_account_in(get(doc, "account", "account")),
        signal_identities=None if identities is MISSING else copy.deepcopy(identities),
        my_app_state_key_id=optional(
            get(doc, "myAppStateKeyId", "my_app_state_key_id"), str_in, "myAppStateKeyId"
        ),
        first_unuploaded_pre_key_id=_counter_in(doc, "firstUnuploadedPreKeyId", 1),
        next_pre_key_id=_counter_in(doc, "nextPreKeyId", 1),
        last_account_sync_timestamp=optional(
            get(doc, "lastAccountSyncTimestamp", "last_account_sync_timestamp"),
            int_in,
            "lastAccountSyncTimestamp",
        ),
        platform=optional(get(doc, "platform", "platform"), str_in, "platform"),
        processed_history_messages=(
            [] if history is MISSING or history is None else copy.deepcopy(history)
        ),
        account_sync_counter=_counter_in(doc, "accountSyncCounter", 0),
        account_settings=_account_settings_in(get(doc, "accountSettings", "account_settings")),
        registered=optional(get(doc, "registered", "registered"), bool_in, "registered") or False,
        pairing_code=optional(get(doc, "pairingCode", "pairing_code"), str_in, "pairingCode"),
        last_prop_hash=optional(get(doc, "lastPropHash", "last_prop_hash"), str_in, "lastPropHash"),
        routing_info=optional(get(doc, "routingInfo", "routing_info"), bytes_in, "routingInfo"),
        additional_data=None if additional is MISSING else copy.deepcopy(additional),
        **extra,
    )
