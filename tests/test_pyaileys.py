"""pyaileys on every backend, offline: a client's own creds.update saved, two
Signal parties talking over keys kept in the database across a full restart,
and the creds conversion checked field by field."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import gc
import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyaileys", minversion="0.1.5")

from pyaileys import WhatsAppClient
from pyaileys.auth.creds import (
    AccountSettings,
    AuthenticationCreds,
    Contact,
    KeyPair,
    SignedKeyPair,
)
from pyaileys.auth.utils import init_auth_creds
from pyaileys.constants import WA_ADV_ACCOUNT_SIG_PREFIX, WA_ADV_DEVICE_SIG_PREFIX
from pyaileys.crypto.curve import DefaultCurve25519Provider
from pyaileys.crypto.hkdf import hmac_sha256
from pyaileys.signal import SignalRepository
from pyaileys.signal.repository import PreKeyBundle, PreKeyBundleKey
from pyaileys.signal.util import signal_pubkey
from pyaileys.socket import WASocket
from pyaileys.util import json as pyaileys_json
from pyaileys.wabinary import S_WHATSAPP_NET
from pyaileys.wabinary.types import BinaryNode

from wa_session_store import (
    InvalidInputError,
    InvalidTypeError,
    PostgresStore,
    SQLiteStore,
)
from wa_session_store.integrations.pyaileys import (
    FIELD_NAMES,
    PyaileysAuthState,
    creds_from_document,
    creds_to_document,
    use_pyaileys_auth_state,
)
from wa_session_store.store.base import BaseStore

proto: Any = importlib.import_module("pyaileys.proto.WAProto_pb2")
curve = DefaultCurve25519Provider()

PHONE_JID = "15550001111:7@s.whatsapp.net"
PHONE_LID = "98765432101234:7@lid"
SERVER_LID = "98765432101234@lid"
ROUTING_INFO = b"\x08\x02\x08\x05\x10\x01"
PROPS_HASH = "props-hash-1"

ALICE = "15550000001@s.whatsapp.net"
BOB = "15550000002@s.whatsapp.net"


def _fields(creds: AuthenticationCreds) -> dict[str, Any]:
    return {spec.name: getattr(creds, spec.name) for spec in dataclasses.fields(creds)}


def assert_same_creds(actual: AuthenticationCreds, expected: AuthenticationCreds) -> None:
    """Field by field, so a failure names the field."""
    got, want = _fields(actual), _fields(expected)
    for name in want:
        assert got[name] == want[name], f"field {name} differs"
    assert actual == expected


# -- a stand-in for WhatsApp's side of the socket -----------------------------


class FakeServer:
    """Replaces ``WASocket.send_node`` (the only step that needs a live Noise
    session): records what the client sends and answers its iq queries by
    feeding stanzas to the socket's own dispatcher, as the receive loop does."""

    def __init__(self, socket: WASocket) -> None:
        self.socket = socket
        self.sent: list[BinaryNode] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def send_node(self, node: BinaryNode) -> None:
        self.sent.append(node)
        if node.tag == "iq" and node.attrs.get("type") in ("get", "set") and "id" in node.attrs:
            self.deliver(self._reply(node))

    def deliver(self, node: BinaryNode) -> None:
        task = asyncio.create_task(self.socket._dispatch_node(node))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _reply(node: BinaryNode) -> BinaryNode:
        first = node.content[0].tag if isinstance(node.content, list) and node.content else ""
        xmlns = node.attrs.get("xmlns")
        content: list[BinaryNode] | None = None
        if (xmlns, first) == ("encrypt", "count"):
            content = [BinaryNode(tag="count", attrs={"value": "0"})]
        elif (xmlns, first) == ("encrypt", "digest"):
            content = [BinaryNode(tag="digest", attrs={})]
        elif (xmlns, first) == ("w", "props"):
            prop = BinaryNode(tag="prop", attrs={"name": "feature", "value": "1"})
            content = [BinaryNode(tag="props", attrs={"hash": PROPS_HASH}, content=[prop])]
        attrs = {"id": node.attrs["id"], "type": "result", "from": S_WHATSAPP_NET}
        return BinaryNode(tag="iq", attrs=attrs, content=content)

    async def settle(self) -> None:
        """Wait until the client's background work and our replies are done."""
        me = asyncio.current_task()
        for _ in range(200):
            busy = [
                task
                for task in asyncio.all_tasks()
                if task is not me
                and not task.done()
                and (task in self._tasks or task.get_name().startswith("pyaileys."))
            ]
            if not busy:
                return
            await asyncio.wait(busy, timeout=10)
        raise AssertionError("the client did not settle")

    def uploaded_pre_keys(self) -> dict[str, bytes]:
        """``{key id: public key}`` of every pre-key upload the client sent."""
        found: dict[str, bytes] = {}
        for node in self.sent:
            if node.tag != "iq" or node.attrs.get("xmlns") != "encrypt":
                continue
            for child in node.content if isinstance(node.content, list) else []:
                if child.tag != "list" or not isinstance(child.content, list):
                    continue
                for key in child.content:
                    assert isinstance(key.content, list)
                    parts = {part.tag: part.content for part in key.content}
                    key_id, value = parts["id"], parts["value"]
                    assert isinstance(key_id, bytes)
                    assert isinstance(value, bytes)
                    found[str(int.from_bytes(key_id, "big"))] = value
        return found


def pair_success_stanza(creds: AuthenticationCreds, phone: KeyPair) -> tuple[BinaryNode, bytes]:
    """What the server sends when the phone scans the QR code (signed by ``phone``)."""
    device = proto.ADVDeviceIdentity(rawId=4242, timestamp=int(time.time()), keyIndex=3)
    details = device.SerializeToString()
    signature = curve.sign(
        phone.private, WA_ADV_ACCOUNT_SIG_PREFIX + details + creds.signed_identity_key.public
    )
    account = proto.ADVSignedDeviceIdentity(
        details=details, accountSignatureKey=phone.public, accountSignature=signature
    ).SerializeToString()
    adv_key = base64.b64decode(creds.adv_secret_key)
    identity = proto.ADVSignedDeviceIdentityHMAC(
        details=account, hmac=hmac_sha256(adv_key, account)
    ).SerializeToString()
    node = BinaryNode(
        tag="iq",
        attrs={"id": "pair-1", "type": "set", "from": S_WHATSAPP_NET, "t": str(int(time.time()))},
        content=[
            BinaryNode(
                tag="pair-success",
                attrs={},
                content=[
                    BinaryNode(tag="device-identity", attrs={}, content=identity),
                    BinaryNode(tag="platform", attrs={"name": "smbi"}),
                    BinaryNode(tag="device", attrs={"jid": PHONE_JID, "lid": PHONE_LID}),
                    BinaryNode(tag="biz", attrs={"name": "Test Shop"}),
                ],
            )
        ],
    )
    return node, details


async def _wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _fresh(make_store: Callable[..., BaseStore]) -> BaseStore:
    # Any option gives a new instance (the memory backend otherwise returns the shared one).
    return make_store(max_value_size=64 * 1024 * 1024)


# -- 1. a client's own creds.update reaches the database ----------------------


async def test_client_creds_updates_are_saved(
    store: BaseStore, make_store: Callable[..., BaseStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.perf_counter()
    auth = await use_pyaileys_auth_state(store, "bot", throttle=3600, backup_interval=None)
    assert auth.is_new
    # New creds are saved before use_pyaileys_auth_state returns.
    assert await store.load_creds("bot") == creds_to_document(auth.creds)
    assert not auth.pending

    client = WhatsAppClient(auth=auth.state)
    auth.attach(client)
    server = FakeServer(client.socket)
    monkeypatch.setattr(client.socket, "send_node", server.send_node)
    # What connect() does once the transport is up; the stanzas below then
    # take the path the receive loop gives them.
    client.socket._install_default_handlers()

    # The phone scans the QR code: pair-success sets account, me, platform and
    # signal identities, then emits creds.update.
    phone = curve.generate_keypair()
    stanza, details = pair_success_stanza(auth.creds, phone)
    server.deliver(stanza)
    await server.settle()
    assert any(
        isinstance(node.content, list) and node.content[0].tag == "pair-device-sign"
        for node in server.sent
    )
    assert client.socket.auth.creds.me == Contact(id=PHONE_JID, name="Test Shop", lid=PHONE_LID)

    # Login: success updates me.lid (creds.update), then the client's
    # post-login work uploads 30 pre-keys (keys written through, counters
    # moved: creds.update, urgent) and fetches props (creds.update, lastPropHash).
    server.deliver(BinaryNode(tag="success", attrs={"t": str(int(time.time())), "lid": SERVER_LID}))
    await server.settle()
    uploaded = server.uploaded_pre_keys()
    assert sorted(uploaded, key=int) == [str(i) for i in range(1, 31)]

    async def counters_saved() -> bool:
        doc = await store.load_creds("bot")
        return doc is not None and doc["nextPreKeyId"] == 31

    # The counters moved: saved at once, despite throttle=3600.
    await _wait_for(counters_saved)

    # The phone shares an app-state sync key (creds.update: myAppStateKeyId).
    key_id, key_data = b"\x00\x01\x02\x03\x04\x05", b"\x07" * 32
    share = proto.Message.AppStateSyncKeyShare(
        keys=[
            proto.Message.AppStateSyncKey(
                keyId=proto.Message.AppStateSyncKeyId(keyId=key_id),
                keyData=proto.Message.AppStateSyncKeyData(keyData=key_data, timestamp=1700),
            )
        ]
    )
    await client._handle_app_state_sync_key_share(share)

    # The server moves us to another edge (creds.update: routingInfo): inside
    # the throttle interval, so it waits.
    server.deliver(
        BinaryNode(
            tag="ib",
            attrs={"from": S_WHATSAPP_NET},
            content=[
                BinaryNode(
                    tag="edge_routing",
                    attrs={},
                    content=[BinaryNode(tag="routing_info", attrs={}, content=ROUTING_INFO)],
                )
            ],
        )
    )
    await server.settle()
    assert client.socket.auth.creds.routing_info == ROUTING_INFO
    assert auth.pending
    saved = await store.load_creds("bot")
    assert saved is not None
    assert "routingInfo" not in saved

    await auth.flush()
    assert not auth.pending
    live = client.socket.auth.creds

    # A fresh store instance on the same database sees every field.
    async with _fresh(make_store) as fresh:
        doc = await fresh.load_creds("bot")
        assert doc is not None
        assert doc["me"] == {"id": PHONE_JID, "name": "Test Shop", "lid": SERVER_LID}
        assert doc["platform"] == "smbi"
        assert set(doc["account"]) == {
            "details",
            "accountSignatureKey",
            "accountSignature",
            "deviceSignature",
        }
        assert doc["account"]["details"] == details
        assert doc["account"]["accountSignatureKey"] == phone.public
        assert curve.verify(
            live.signed_identity_key.public,
            WA_ADV_DEVICE_SIG_PREFIX + details + live.signed_identity_key.public + phone.public,
            doc["account"]["deviceSignature"],
        )
        assert doc["signalIdentities"] == [
            {
                "identifier": {"name": PHONE_LID, "deviceId": 0},
                "identifierKey": b"\x05" + phone.public,
            }
        ]
        assert doc["nextPreKeyId"] == 31
        assert doc["firstUnuploadedPreKeyId"] == 31
        assert doc["lastPropHash"] == PROPS_HASH
        assert doc["myAppStateKeyId"] == base64.b64encode(key_id).decode()
        assert doc["routingInfo"] == ROUTING_INFO
        assert doc["registrationId"] == live.registration_id
        assert doc["noiseKey"] == {
            "public": live.noise_key.public,
            "private": live.noise_key.private,
        }
        assert doc == creds_to_document(live)

        # The pre-keys and the app-state key were written through.
        pre_keys = await fresh.get_keys("bot", "pre-key", list(uploaded))
        assert {key_id: value["public"] for key_id, value in pre_keys.items()} == uploaded
        assert all(len(value["private"]) == 32 for value in pre_keys.values())
        stored_key = (await fresh.get_keys("bot", "app-state-sync-key", [doc["myAppStateKeyId"]]))[
            doc["myAppStateKeyId"]
        ]
        assert proto.Message.AppStateSyncKeyData.FromString(stored_key).keyData == key_data

        # And pyaileys gets the very same creds back.
        again = await use_pyaileys_auth_state(fresh, "bot", backup_interval=None)
        assert not again.is_new
        assert_same_creds(again.creds, live)
        await again.aclose()

    await auth.aclose()
    print(f"pyaileys client creds.update saved and reloaded: {time.perf_counter() - started:.3f} s")


async def test_changes_without_an_event_are_saved_on_close(store: BaseStore) -> None:
    auth = await use_pyaileys_auth_state(store, "s", throttle=3600, backup_interval=None)
    auth.creds.platform = "android"  # changed in place, no creds.update
    auth.creds.account_sync_counter = 5
    await auth.aclose()
    doc = await store.load_creds("s")
    assert doc is not None
    assert (doc["platform"], doc["accountSyncCounter"]) == ("android", 5)


async def test_attach_detach(store: BaseStore) -> None:
    auth = await use_pyaileys_auth_state(store, "s", throttle=0, backup_interval=None)
    client = WhatsAppClient(auth=auth.state)
    detach = auth.attach(client)
    assert auth.attach(client.socket) is not None  # the same emitter: one listener
    assert len(client.socket.events._listeners["creds.update"]) == 1

    auth.creds.pairing_code = "ABCD1234"
    await client.socket.events.emit("creds.update", client.socket.auth.creds)
    await auth.flush()
    doc = await store.load_creds("s")
    assert doc is not None
    assert doc["pairingCode"] == "ABCD1234"

    detach()
    assert client.socket.events._listeners["creds.update"] == []
    auth.creds.pairing_code = "ZZZZ9999"
    await client.socket.events.emit("creds.update", client.socket.auth.creds)
    assert not auth.pending

    # A client on other creds would save them under this session: refused.
    other = WhatsAppClient(auth=(await use_pyaileys_auth_state(store, "t")).state)
    with pytest.raises(InvalidInputError, match="other creds"):
        auth.attach(other)
    with pytest.raises(InvalidTypeError):
        auth.attach(object())  # type: ignore[arg-type]

    # aclose() detaches.
    auth.attach(client)
    await auth.aclose()
    assert client.socket.events._listeners["creds.update"] == []


async def test_a_bad_stored_document_is_refused(store: BaseStore) -> None:
    doc = creds_to_document(init_auth_creds())
    del doc["noiseKey"]
    await store.save_creds("s", doc)
    with pytest.raises(InvalidInputError, match="noiseKey"):
        await use_pyaileys_auth_state(store, "s")


@pytest.mark.parametrize(
    ("category", "value"),
    [
        ("session", b"\x0a\x20" + bytes(range(32))),
        ("pre-key", {"public": b"\x01" * 32, "private": b"\x02" * 32}),
        ("identity-key", b"\x05" + b"\x03" * 32),
        ("sender-key", b"\x0a\x04sk"),
        ("sender-key-memory", {"1555:2@s.whatsapp.net": True, "1556@s.whatsapp.net": False}),
        ("app-state-sync-key", b"\x0a\x20" + b"\x04" * 32),
        (
            "app-state-sync-version",
            {"version": 12, "hash": b"\x00" * 128, "indexValueMap": {"aGk=": b"\x05" * 32}},
        ),
        ("tctoken", {"token": b"\x06" * 20, "timestamp": "1700000000"}),
    ],
)
async def test_every_pyaileys_key_value_shape_round_trips(
    store: BaseStore, category: str, value: Any
) -> None:
    auth = await use_pyaileys_auth_state(store, "s", backup_interval=None)
    await auth.state.keys.set({category: {"k1": value}})
    got = await auth.state.keys.get(category, ["k1", "absent"])
    assert got == {"k1": value, "absent": None}
    assert type(got["k1"]) is type(value)
    await auth.aclose()


# -- 2. two Signal parties over keys kept in the database ---------------------


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def open_signal_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], BaseStore]:
    """New store instances on one database: the test schema, or a SQLite file."""
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("pg_dsn")
        schema: str = request.getfixturevalue("pg_schema")
        return lambda: PostgresStore(dsn, schema=schema)
    path = tmp_path / "signal.db"
    return lambda: SQLiteStore(path)


async def _bundle(auth: PyaileysAuthState, pre_key_id: int) -> PreKeyBundle:
    """Bob's pre-key bundle, read back from the database."""
    stored = (await auth.keys.get("pre-key", [pre_key_id]))[str(pre_key_id)]
    creds = auth.creds
    return PreKeyBundle(
        registration_id=creds.registration_id,
        identity_key=signal_pubkey(creds.signed_identity_key.public),
        signed_pre_key=PreKeyBundleKey(
            key_id=creds.signed_pre_key.key_id,
            public_key=signal_pubkey(creds.signed_pre_key.key_pair.public),
            signature=creds.signed_pre_key.signature,
        ),
        pre_key=PreKeyBundleKey(key_id=pre_key_id, public_key=signal_pubkey(stored["public"])),
    )


class Party:
    received = 0  # messages decrypted, by every party

    def __init__(self, auth: PyaileysAuthState) -> None:
        self.auth = auth
        self.repo = SignalRepository(auth.state)

    async def send(self, to: str, text: str) -> tuple[str, bytes]:
        return await self.repo.encrypt_message(to, data=text.encode())

    async def receive(self, sender: str, message: tuple[str, bytes]) -> str:
        kind, ciphertext = message
        plain = await self.repo.decrypt_message(sender, message_type=kind, ciphertext=ciphertext)
        Party.received += 1
        return plain.decode()


async def test_signal_conversation_survives_a_restart(
    open_signal_store: Callable[[], BaseStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.perf_counter()
    Party.received = 0
    store = open_signal_store()
    await store.open()
    alice = Party(await use_pyaileys_auth_state(store, "alice", backup_interval=None))
    bob = Party(await use_pyaileys_auth_state(store, "bob", backup_interval=None))

    # Bob's client makes and "uploads" pre-keys with its own code (write-through).
    client = WhatsAppClient(auth=bob.auth.state)
    bob.auth.attach(client)
    server = FakeServer(client.socket)
    monkeypatch.setattr(client.socket, "send_node", server.send_node)
    await client.socket._upload_prekeys(5)
    await server.settle()
    assert bob.auth.creds.next_pre_key_id == 6

    await alice.repo.inject_outgoing_session(BOB, await _bundle(bob.auth, 3))
    first = await alice.send(BOB, "hello Bob")
    assert first[0] == "pkmsg"
    assert await bob.receive(ALICE, first) == "hello Bob"
    # The one-time pre-key is used up, in the database once a barrier passed
    # (the frame acknowledging the message would wait for it).
    await bob.auth.auth_state.barrier()
    assert (await store.get_keys("bob", "pre-key", [3]))["3"] is None

    reply = await bob.send(ALICE, "hi Alice")
    assert reply[0] == "msg"
    assert await alice.receive(BOB, reply) == "hi Alice"
    a2, a3 = await alice.send(BOB, "two"), await alice.send(BOB, "three")
    assert (a2[0], a3[0]) == ("msg", "msg")
    assert await bob.receive(ALICE, a3) == "three"  # out of order: a skipped key is kept
    assert await bob.receive(ALICE, a2) == "two"
    for text in ("four", "five"):
        assert await alice.receive(BOB, await bob.send(ALICE, text)) == text

    # In flight over the restart: a4 is overtaken by a5, b6 is not delivered yet.
    a4, a5 = await alice.send(BOB, "six"), await alice.send(BOB, "seven")
    assert await bob.receive(ALICE, a5) == "seven"
    b6 = await bob.send(ALICE, "eight")
    for party in (alice, bob):  # what sending those frames would have waited for
        await party.auth.auth_state.barrier()
    sessions = {
        "alice": await store.get_keys("alice", "session", ["15550000002.0", "15550000001.0"]),
        "bob": await store.get_keys("bob", "session", ["15550000001.0", "15550000002.0"]),
    }
    assert sessions["alice"]["15550000002.0"] is not None
    assert sessions["alice"]["15550000001.0"] is None
    assert sessions["bob"]["15550000001.0"] is not None
    assert sessions["bob"]["15550000002.0"] is None
    identities = {
        name: party.auth.creds.signed_identity_key
        for name, party in (("alice", alice), ("bob", bob))
    }

    # Drop every in-process object; only the database remains.
    await alice.auth.aclose()
    await bob.auth.aclose()
    await store.close()
    del alice, bob, client, server, store
    gc.collect()

    store = open_signal_store()
    await store.open()
    alice = Party(await use_pyaileys_auth_state(store, "alice", backup_interval=None))
    bob = Party(await use_pyaileys_auth_state(store, "bob", backup_interval=None))
    assert not alice.auth.is_new
    assert not bob.auth.is_new
    assert alice.auth.creds.signed_identity_key == identities["alice"]
    assert bob.auth.creds.signed_identity_key == identities["bob"]
    assert bob.auth.creds.next_pre_key_id == 6

    assert await bob.receive(ALICE, a4) == "six"  # its skipped key came from the database
    assert await alice.receive(BOB, b6) == "eight"
    for sender, receiver, to, frm, text in (
        (alice, bob, BOB, ALICE, "nine"),
        (bob, alice, ALICE, BOB, "ten"),
        (bob, alice, ALICE, BOB, "eleven"),
        (alice, bob, BOB, ALICE, "twelve"),
        (alice, bob, BOB, ALICE, "thirteen"),
        (bob, alice, ALICE, BOB, "fourteen"),
    ):
        message = await sender.send(to, text)
        assert message[0] == "msg"
        assert await receiver.receive(frm, message) == text

    await alice.auth.aclose()
    await bob.auth.aclose()
    await store.close()
    print(
        f"pyaileys Signal: {Party.received} messages across a restart on "
        f"{type(store).__name__}: {time.perf_counter() - started:.3f} s"
    )


# -- 3. the creds conversion, field by field ----------------------------------


def test_field_names_cover_every_creds_field() -> None:
    assert set(FIELD_NAMES) == {spec.name for spec in dataclasses.fields(AuthenticationCreds)}
    assert len(set(FIELD_NAMES.values())) == len(FIELD_NAMES)


async def test_new_creds_round_trip(store: BaseStore) -> None:
    creds = init_auth_creds()
    doc = creds_to_document(creds)
    # Exactly the fields Baileys' initAuthCreds() writes.
    assert set(doc) == {
        "noiseKey",
        "pairingEphemeralKeyPair",
        "signedIdentityKey",
        "signedPreKey",
        "registrationId",
        "advSecretKey",
        "processedHistoryMessages",
        "nextPreKeyId",
        "firstUnuploadedPreKeyId",
        "accountSyncCounter",
        "accountSettings",
        "registered",
    }
    for name, attr in (
        ("noiseKey", "noise_key"),
        ("pairingEphemeralKeyPair", "pairing_ephemeral_key_pair"),
        ("signedIdentityKey", "signed_identity_key"),
    ):
        pair = getattr(creds, attr)
        assert doc[name] == {"public": pair.public, "private": pair.private}
        assert type(doc[name]["public"]) is bytes
        assert len(doc[name]["private"]) == 32
    assert doc["signedPreKey"] == {
        "keyPair": {
            "public": creds.signed_pre_key.key_pair.public,
            "private": creds.signed_pre_key.key_pair.private,
        },
        "signature": creds.signed_pre_key.signature,
        "keyId": 1,
    }
    assert len(doc["signedPreKey"]["signature"]) == 64
    assert doc["registrationId"] == creds.registration_id
    assert 1 <= doc["registrationId"] <= 16383
    assert doc["advSecretKey"] == creds.adv_secret_key
    assert len(base64.b64decode(doc["advSecretKey"])) == 32
    assert doc["processedHistoryMessages"] == []
    assert (doc["nextPreKeyId"], doc["firstUnuploadedPreKeyId"]) == (1, 1)
    assert doc["accountSyncCounter"] == 0
    assert doc["accountSettings"] == {"unarchiveChats": False}
    assert doc["registered"] is False

    assert_same_creds(creds_from_document(doc), creds)
    # Through the store's encoding too.
    await store.save_creds("s", doc)
    loaded = await store.load_creds("s")
    assert loaded == doc
    assert loaded is not None
    assert_same_creds(creds_from_document(loaded), creds)


def full_creds() -> AuthenticationCreds:
    """Every field set, none at its default."""
    account = proto.ADVSignedDeviceIdentity(
        details=b"\x08\x01\x10\x02",
        accountSignatureKey=b"\x11" * 32,
        accountSignature=b"\x12" * 64,
        deviceSignature=b"\x13" * 64,
    ).SerializeToString()
    return AuthenticationCreds(
        noise_key=KeyPair(public=b"\x01" * 32, private=b"\x02" * 32),
        pairing_ephemeral_key_pair=KeyPair(public=b"\x03" * 32, private=b"\x04" * 32),
        signed_identity_key=KeyPair(public=b"\x05" * 32, private=b"\x06" * 32),
        signed_pre_key=SignedKeyPair(
            key_pair=KeyPair(public=b"\x07" * 32, private=b"\x08" * 32),
            signature=b"\x09" * 64,
            key_id=7,
            timestamp_s=1_700_000_000,
        ),
        registration_id=12345,
        adv_secret_key=base64.b64encode(b"\x0a" * 32).decode(),
        me=Contact(id=PHONE_JID, name="Test Shop", lid=PHONE_LID),
        account=account,
        signal_identities=[
            {"identifier": {"name": PHONE_LID, "deviceId": 0}, "identifierKey": b"\x05" * 33}
        ],
        my_app_state_key_id="AAECAwQF",
        first_unuploaded_pre_key_id=61,
        next_pre_key_id=91,
        last_account_sync_timestamp=1_700_000_123,
        platform="smbi",
        processed_history_messages=[
            {
                "key": {"remoteJid": PHONE_JID, "id": "3EB0ABC", "fromMe": True},
                "messageTimestamp": 17,
            }
        ],
        account_sync_counter=3,
        account_settings=AccountSettings(
            unarchive_chats=True,
            default_disappearing_mode={
                "ephemeralExpiration": 86400,
                "ephemeralSettingTimestamp": 9,
            },
        ),
        registered=True,
        pairing_code="ABCD1234",
        last_prop_hash=PROPS_HASH,
        routing_info=ROUTING_INFO,
        additional_data={"note": "kept", "blob": b"\x0b\x0c"},
    )


async def test_fully_populated_creds_round_trip(store: BaseStore) -> None:
    creds = full_creds()
    doc = creds_to_document(creds)
    assert set(doc) == set(FIELD_NAMES.values())
    assert doc["signedPreKey"] == {
        "keyPair": {"public": b"\x07" * 32, "private": b"\x08" * 32},
        "signature": b"\x09" * 64,
        "keyId": 7,
        "timestampS": 1_700_000_000,
    }
    assert doc["registrationId"] == 12345
    assert doc["me"] == {"id": PHONE_JID, "name": "Test Shop", "lid": PHONE_LID}
    # account as Baileys keeps it: the fields of the ADVSignedDeviceIdentity.
    assert doc["account"] == {
        "details": b"\x08\x01\x10\x02",
        "accountSignatureKey": b"\x11" * 32,
        "accountSignature": b"\x12" * 64,
        "deviceSignature": b"\x13" * 64,
    }
    assert doc["signalIdentities"] == creds.signal_identities
    assert doc["signalIdentities"] is not creds.signal_identities  # a snapshot
    assert doc["myAppStateKeyId"] == "AAECAwQF"
    assert (doc["nextPreKeyId"], doc["firstUnuploadedPreKeyId"]) == (91, 61)
    assert doc["lastAccountSyncTimestamp"] == 1_700_000_123
    assert doc["platform"] == "smbi"
    assert doc["processedHistoryMessages"] == creds.processed_history_messages
    assert doc["accountSyncCounter"] == 3
    assert doc["accountSettings"] == {
        "unarchiveChats": True,
        "defaultDisappearingMode": {"ephemeralExpiration": 86400, "ephemeralSettingTimestamp": 9},
    }
    assert doc["registered"] is True
    assert doc["pairingCode"] == "ABCD1234"
    assert doc["lastPropHash"] == PROPS_HASH
    assert doc["routingInfo"] == ROUTING_INFO
    assert doc["additionalData"] == {"note": "kept", "blob": b"\x0b\x0c"}

    assert_same_creds(creds_from_document(doc), creds)
    await store.save_creds("s", doc)
    loaded = await store.load_creds("s")
    assert loaded == doc
    assert loaded is not None
    assert_same_creds(creds_from_document(loaded), creds)


@pytest.mark.parametrize("with_me", [False, True])
def test_optional_fields_none_absent_and_null(with_me: bool) -> None:
    creds = full_creds()
    optional = {
        "account": "account",
        "signal_identities": "signalIdentities",
        "my_app_state_key_id": "myAppStateKeyId",
        "last_account_sync_timestamp": "lastAccountSyncTimestamp",
        "platform": "platform",
        "pairing_code": "pairingCode",
        "last_prop_hash": "lastPropHash",
        "routing_info": "routingInfo",
        "additional_data": "additionalData",
    }
    for attr in optional:
        setattr(creds, attr, None)
    # me: absent entirely, or present with its optional name and lid unset.
    creds.me = Contact(id=PHONE_JID) if with_me else None
    creds.signed_pre_key.timestamp_s = None
    creds.account_settings.default_disappearing_mode = None
    doc = creds_to_document(creds)

    # None is left out, as in Baileys' JSON ...
    for name in optional.values():
        assert name not in doc
    if with_me:
        assert doc["me"] == {"id": PHONE_JID}
    else:
        assert "me" not in doc
    assert "timestampS" not in doc["signedPreKey"]
    assert doc["accountSettings"] == {"unarchiveChats": True}
    assert_same_creds(creds_from_document(doc), creds)

    # ... and an explicit null reads as None too.
    nulls = {**doc, **dict.fromkeys(optional.values())}
    nulls["me"] = {"id": PHONE_JID, "name": None, "lid": None} if with_me else None
    nulls["signedPreKey"] = {**doc["signedPreKey"], "timestampS": None}
    nulls["accountSettings"] = {"unarchiveChats": True, "defaultDisappearingMode": None}
    assert_same_creds(creds_from_document(nulls), creds)


def test_absent_fields_take_pyaileys_defaults() -> None:
    full = creds_to_document(init_auth_creds())
    minimal = {
        name: full[name]
        for name in (
            "noiseKey",
            "pairingEphemeralKeyPair",
            "signedIdentityKey",
            "signedPreKey",
            "registrationId",
            "advSecretKey",
        )
    }
    creds = creds_from_document(minimal)
    assert (creds.next_pre_key_id, creds.first_unuploaded_pre_key_id) == (1, 1)
    assert creds.processed_history_messages == []
    assert creds.account_sync_counter == 0
    assert creds.account_settings == AccountSettings()
    assert creds.registered is False
    assert creds.me is None
    assert creds.account is None
    assert creds.routing_info is None


def test_unknown_fields_round_trip_through_base() -> None:
    doc = creds_to_document(full_creds())
    doc["backupToken"] = b"\x0d" * 20  # a field of older Baileys versions
    doc["futureField"] = {"nested": [1, 2, {"x": b"\x0e"}]}
    doc["me"] = {**doc["me"], "verifiedName": "Test Shop Ltd", "notify": "Shop"}
    doc["accountSettings"] = {**doc["accountSettings"], "newSetting": True}
    doc["signedPreKey"] = {**doc["signedPreKey"], "extra": 1}
    doc["noiseKey"] = {**doc["noiseKey"], "extra": 2}

    creds = creds_from_document(doc)
    creds.next_pre_key_id += 10
    out = creds_to_document(creds, base=doc)
    assert out == {**doc, "nextPreKeyId": doc["nextPreKeyId"] + 10}
    assert out["futureField"] is not doc["futureField"]
    # Without the base they are not known, so not written.
    bare = creds_to_document(creds)
    assert "backupToken" not in bare
    assert "verifiedName" not in bare["me"]
    # me's extra fields belong to its account only.
    creds.me = Contact(id="15559999999:1@s.whatsapp.net")
    assert creds_to_document(creds, base=doc)["me"] == {"id": "15559999999:1@s.whatsapp.net"}


def test_pyaileys_own_snake_case_document_is_read() -> None:
    """What pyaileys' MultiFileAuthState writes to creds.json (asdict, snake_case)."""
    creds = full_creds()
    doc = pyaileys_json.loads(pyaileys_json.dumps(dataclasses.asdict(creds)))
    assert "noise_key" in doc
    assert_same_creds(creds_from_document(doc), creds)
    # Written back under Baileys' names, nothing duplicated.
    assert creds_to_document(creds_from_document(doc), base=doc) == creds_to_document(creds)


def test_baileys_document_reads_and_writes_back_unchanged() -> None:
    """A document as Baileys writes it (account as an object of Buffers)."""
    details = proto.ADVDeviceIdentity(rawId=1, timestamp=2, keyIndex=3).SerializeToString()
    doc = creds_to_document(init_auth_creds())
    doc.update(
        me={"id": PHONE_JID, "lid": PHONE_LID, "name": "~"},
        account={
            "details": details,
            "accountSignatureKey": b"\x21" * 32,
            "accountSignature": b"\x22" * 64,
            "deviceSignature": b"\x23" * 64,
        },
        signalIdentities=[
            {"identifier": {"name": PHONE_LID, "deviceId": 0}, "identifierKey": b"\x05" * 33}
        ],
        platform="android",
        lastAccountSyncTimestamp=1_700_000_000,
        myAppStateKeyId="AAAAAFbW",
        routingInfo=ROUTING_INFO,
        lastPropHash="abc",
    )
    creds = creds_from_document(doc)
    # pyaileys gets the account as the serialized proto it sends as device-identity.
    assert isinstance(creds.account, bytes)
    parsed = proto.ADVSignedDeviceIdentity.FromString(creds.account)
    assert parsed.details == details
    assert parsed.deviceSignature == b"\x23" * 64
    assert creds_to_document(creds, base=doc) == doc


def test_account_that_is_not_the_proto_stays_bytes() -> None:
    creds = init_auth_creds()
    creds.account = b"\xff\xff\xff"  # does not parse as ADVSignedDeviceIdentity
    doc = creds_to_document(creds)
    assert doc["account"] == b"\xff\xff\xff"
    assert creds_from_document(doc).account == b"\xff\xff\xff"


def test_the_document_is_a_snapshot() -> None:
    creds = full_creds()
    doc = creds_to_document(creds)
    before = copy.deepcopy(doc)
    assert creds.signal_identities is not None
    creds.signal_identities.append({"identifier": {"name": "x", "deviceId": 1}})
    creds.processed_history_messages.append({"key": {}})
    creds.next_pre_key_id += 1
    assert doc == before


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        (lambda d: d.pop("noiseKey"), InvalidInputError, "noiseKey"),
        (lambda d: d.pop("advSecretKey"), InvalidInputError, "advSecretKey"),
        (lambda d: d["signedPreKey"].pop("keyId"), InvalidInputError, "signedPreKey.keyId"),
        (lambda d: d.update(registrationId="7"), InvalidTypeError, "registrationId"),
        (lambda d: d.update(registrationId=True), InvalidTypeError, "registrationId"),
        (lambda d: d.update(nextPreKeyId=1.5), InvalidTypeError, "nextPreKeyId"),
        (lambda d: d.update(registered="yes"), InvalidTypeError, "registered"),
        (lambda d: d.update(routingInfo="AQID"), InvalidTypeError, "routingInfo"),
        (lambda d: d.update(me={"name": "x"}), InvalidInputError, "me.id"),
        (lambda d: d.update(processedHistoryMessages={}), InvalidTypeError, "processedHistory"),
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
    with pytest.raises(InvalidTypeError):
        creds_from_document([])  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        creds_to_document(creds_to_document(init_auth_creds()))  # type: ignore[arg-type]
    creds = init_auth_creds()
    creds.routing_info = "not bytes"  # type: ignore[assignment]
    with pytest.raises(InvalidTypeError, match="routing_info"):
        creds_to_document(creds)
