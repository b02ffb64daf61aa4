"""waton's AuthCreds as a stored creds document, field by field: new and fully
populated creds round-trip through every backend, waton's own spelling is
read, unknown fields are carried, bad documents are refused without values."""

from __future__ import annotations

import base64
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import pytest

if sys.version_info < (3, 11):  # pragma: no cover - depends on the interpreter
    pytest.skip("waton needs Python 3.11+; this is Python 3.10", allow_module_level=True)

from waton.infra.storage_json import JsonStorage
from waton.utils.auth import AuthCreds, init_auth_creds

from wa_session_store import InvalidInputError, InvalidTypeError
from wa_session_store.integrations.waton import (
    FIELD_NAMES,
    creds_from_document,
    creds_to_document,
    use_waton_auth_state,
)
from wa_session_store.store.base import BaseStore

PHONE_JID = "15550001111:7@s.whatsapp.net"


def full_creds() -> AuthCreds:
    """Every field set, none at its default, shaped as waton fills them."""
    creds = init_auth_creds()
    creds.signed_pre_key["timestampS"] = 1_700_000_000
    creds.processed_history_messages = [{"id": "3EB0", "sync_type": 2, "chunk_order": 1}]
    creds.next_pre_key_id, creds.first_unuploaded_pre_key_id = 91, 61
    creds.account_sync_counter = 3
    creds.account_settings = {"unarchive_chats": True}
    creds.registered = True
    creds.pairing_code = "ABCD1234"
    creds.last_prop_hash = "props-hash-1"
    creds.routing_info = b"\x08\x02\x08\x05"
    creds.additional_data = {"lid_mapping": {"pn_to_lid_user": {"1555": "987"}}, "b": b"\x0b"}
    creds.account = {"details": "CAEQAg==", "account_signature_key": "ERER"}
    creds.me = {"id": PHONE_JID, "name": "Test Shop", "lid": "987:7@lid"}
    creds.signal_identities = [{"identifier": {"name": "987:7@lid", "deviceId": 0}}]
    creds.server_hashes = ["h1", "h2"]
    creds.platform = "smbi"
    return creds


def test_field_names_cover_every_creds_field() -> None:
    assert set(FIELD_NAMES) == {spec.name for spec in dataclasses.fields(AuthCreds)}
    assert FIELD_NAMES["next_pre_key_id"] == "nextPreKeyId"
    assert FIELD_NAMES["server_hashes"] == "serverHashes"


@pytest.mark.parametrize("make", [init_auth_creds, full_creds], ids=["new", "full"])
async def test_creds_round_trip_through_the_store(
    store: BaseStore, make: Callable[[], AuthCreds]
) -> None:
    creds = make()
    doc = creds_to_document(creds)
    assert doc["noiseKey"] == creds.noise_key
    assert doc["noiseKey"] is not creds.noise_key  # a snapshot
    assert type(doc["signedIdentityKey"]["private"]) is bytes
    assert doc["signedPreKey"]["keyId"] == 1
    assert doc["registrationId"] == creds.registration_id
    assert (doc["nextPreKeyId"], doc["firstUnuploadedPreKeyId"]) == (
        creds.next_pre_key_id,
        creds.first_unuploaded_pre_key_id,
    )
    # None is left out, as in Baileys' JSON.
    assert all(
        FIELD_NAMES[spec.name] in doc
        for spec in dataclasses.fields(creds)
        if getattr(creds, spec.name) is not None
    )
    assert all(value is not None for value in doc.values())
    await store.save_creds("s", doc)
    loaded = await store.load_creds("s")
    assert loaded == doc
    assert loaded is not None
    again = creds_from_document(loaded)
    for spec in dataclasses.fields(creds):
        assert getattr(again, spec.name) == getattr(creds, spec.name), spec.name
    assert again == creds


def test_the_document_is_a_snapshot() -> None:
    creds = full_creds()
    doc = creds_to_document(creds)
    assert creds.additional_data is not None
    creds.additional_data["lid_mapping"]["pn_to_lid_user"]["1556"] = "988"
    creds.next_pre_key_id += 1
    assert doc["additionalData"]["lid_mapping"]["pn_to_lid_user"] == {"1555": "987"}
    assert doc["nextPreKeyId"] == 91


def test_waton_own_spelling_is_read() -> None:
    """Snake_case names, as waton's JsonStorage writes them (with bytes as bytes)."""
    creds = full_creds()
    snake = {spec.name: getattr(creds, spec.name) for spec in dataclasses.fields(creds)}
    snake["signed_pre_key"] = {
        "key_pair": creds.signed_pre_key["keyPair"],
        "signature": creds.signed_pre_key["signature"],
        "key_id": 1,
        "timestampS": 1_700_000_000,
    }
    assert creds_from_document(snake) == creds
    # Written back under Baileys' names only.
    assert creds_to_document(creds_from_document(snake)) == creds_to_document(creds)


def test_waton_json_storage_creds_differ_only_in_bytes_encoding(tmp_path: Any) -> None:
    """waton's JsonStorage keeps bytes as base64 text; we keep them as bytes: an
    advSecretKey stored as a Buffer reads back as waton's base64 text."""
    creds = init_auth_creds()
    doc = creds_to_document(creds)
    raw = JsonStorage(tmp_path / "w.json")._creds_to_json(creds)
    assert {FIELD_NAMES[name] for name in raw if raw[name] is not None} == set(doc)
    doc["advSecretKey"] = base64.b64decode(creds.adv_secret_key)
    assert creds_from_document(doc).adv_secret_key == creds.adv_secret_key


def test_unknown_fields_round_trip_through_base() -> None:
    doc = creds_to_document(full_creds())
    doc["myAppStateKeyId"] = "AAECAwQF"  # a Baileys field waton lacks
    doc["futureField"] = {"nested": [1, {"x": b"\x0e"}]}
    creds = creds_from_document(doc)
    creds.next_pre_key_id += 10
    out = creds_to_document(creds, base=doc)
    assert out == {**doc, "nextPreKeyId": doc["nextPreKeyId"] + 10}
    assert out["futureField"] is not doc["futureField"]
    assert "futureField" not in creds_to_document(creds)


def test_absent_and_null_fields_take_waton_defaults() -> None:
    full = creds_to_document(init_auth_creds())
    required = ["noiseKey", "pairingEphemeralKeyPair", "signedIdentityKey", "signedPreKey"]
    minimal = {name: full[name] for name in [*required, "registrationId", "advSecretKey"]}
    creds = creds_from_document({**minimal, "me": None, "registered": None})
    assert (creds.next_pre_key_id, creds.first_unuploaded_pre_key_id) == (1, 1)
    assert creds.processed_history_messages == []
    assert creds.account_settings == {"unarchive_chats": False}
    assert creds.registered is False
    assert creds.me is None
    assert creds.routing_info is None


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        (lambda d: d.pop("noiseKey"), InvalidInputError, "noiseKey"),
        (lambda d: d.pop("advSecretKey"), InvalidInputError, "advSecretKey"),
        (lambda d: d.pop("registrationId"), InvalidInputError, "registrationId"),
        (lambda d: d["signedPreKey"].pop("keyId"), InvalidInputError, "signedPreKey.keyId"),
        (lambda d: d["noiseKey"].pop("private"), InvalidInputError, "noiseKey.private"),
        (lambda d: d.update(registrationId="7"), InvalidTypeError, "registrationId"),
        (lambda d: d.update(nextPreKeyId=True), InvalidTypeError, "nextPreKeyId"),
        (lambda d: d.update(registered="yes"), InvalidTypeError, "registered"),
        (lambda d: d.update(routingInfo="AQID"), InvalidTypeError, "routingInfo"),
        (lambda d: d.update(me=["x"]), InvalidTypeError, "me"),
        (lambda d: d.update(serverHashes="h"), InvalidTypeError, "serverHashes"),
        (
            lambda d: d["signedIdentityKey"].update(private=[1, 2]),
            InvalidTypeError,
            "signedIdentityKey.private",
        ),
    ],
)
def test_bad_documents_are_refused_without_values(
    change: Callable[[dict[str, Any]], object], error: type[Exception], field: str
) -> None:
    doc = creds_to_document(init_auth_creds())
    secret = doc["signedIdentityKey"]["private"]
    change(doc)
    with pytest.raises(error, match=field.replace(".", r"\.")) as caught:
        creds_from_document(doc)
    assert secret.hex() not in str(caught.value)
    assert repr(secret) not in str(caught.value)


def test_wrong_types_are_refused() -> None:
    with pytest.raises(InvalidTypeError, match="mapping"):
        creds_from_document([])  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="AuthCreds"):
        creds_to_document(creds_to_document(init_auth_creds()))  # type: ignore[arg-type]
    creds = init_auth_creds()
    creds.routing_info = "not bytes"
    with pytest.raises(InvalidTypeError, match="routing_info"):
        creds_to_document(creds)
    creds = init_auth_creds()
    creds.noise_key["public"] = "not bytes"
    with pytest.raises(InvalidTypeError, match=r"noise_key\.public"):
        creds_to_document(creds)


async def test_a_bad_stored_document_is_refused_and_closes(store: BaseStore) -> None:
    doc = creds_to_document(init_auth_creds())
    del doc["noiseKey"]
    await store.save_creds("s", doc)
    with pytest.raises(InvalidInputError, match="noiseKey"):
        await use_waton_auth_state(store, "s")
