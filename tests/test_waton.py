"""waton on every backend, offline, with waton's own code: its creds saves
through the StoragePort, its pre-key upload behind the barrier, two parties
talking 1:1 and in a group across a redeploy in both key modes, round trips
counted at the proxy, and a client SIGKILLed around its barrier."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import pytest

if sys.version_info < (3, 11):  # pragma: no cover - depends on the interpreter
    pytest.skip("waton needs Python 3.11+; this is Python 3.10", allow_module_level=True)

from psycopg.conninfo import conninfo_to_dict
from waton.client.client import WAClient
from waton.infra.storage_sqlite import SQLiteStorage
from waton.protocol.binary_node import BinaryNode
from waton.protocol.signal_repo import SignalRepository
from waton.utils.auth import init_auth_creds

from wa_session_store import (
    AuthKeys,
    InvalidInputError,
    InvalidTypeError,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    copy_sessions,
)
from wa_session_store.integrations.waton import (
    WatonAuthState,
    creds_to_document,
    metadata_category,
    use_waton_auth_state,
)
from wa_session_store.store.base import BaseStore

from .barrier_child import open_store
from .proxy import Proxy
from .test_options_checked_first import BAD_OPTIONS
from .waton_fanout import (
    device_jids,
    fan_out,
    frame_nodes,
    make_bundles,
    message,
    open_sessions,
    wire,
)

ALICE = "15550000001@s.whatsapp.net"
BOB = "15550000002@s.whatsapp.net"
GROUP = "120363000000000001@g.us"


@pytest.fixture
def no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pending writes wait for an explicit barrier (no flush on a timer)."""
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 3600.0)


def _fresh(make_store: Callable[..., BaseStore]) -> BaseStore:
    # Any option gives a new instance (the memory backend otherwise returns the shared one).
    return make_store(max_value_size=64 * 1024 * 1024)


def _attached(auth: WatonAuthState) -> WAClient:
    """A WAClient on ``auth``, attached before it has loaded its creds, wired offline."""
    client = WAClient(auth.storage)
    assert client.creds is None
    auth.attach(client)
    wire(client)
    return client


# -- 1. waton's own code saves its creds and keys through the storage -------------


async def test_waton_own_creds_saves_and_pre_key_upload(
    store: BaseStore, make_store: Callable[..., BaseStore], no_timer: None
) -> None:
    auth = await use_waton_auth_state(store, "bot", throttle=3600, backup_interval=None)
    assert auth.is_new
    # New creds are saved before use_waton_auth_state returns.
    assert await store.load_creds("bot") == creds_to_document(auth.creds)
    client = _attached(auth)

    # waton asks for a pairing code: it loads its creds from the storage,
    # changes them (pairing code, me) and calls save_creds: throttled, not urgent.
    code = await client.request_pairing_code("+1 555 000 1111")
    assert client.creds is auth.creds
    assert auth.creds.pairing_code == code.replace("-", "")
    assert auth.pending
    saved = await store.load_creds("bot")
    assert saved is not None
    assert "pairingCode" not in saved

    # waton's pre-key upload: 30 save_prekey, the counters moved (save_creds:
    # urgent), then the iq. What the database holds as that frame leaves:
    seen: list[tuple[dict[str, Any] | None, dict[str, Any]]] = []

    async def check(node: BinaryNode) -> None:
        if node.attrs.get("xmlns") == "encrypt":
            ids = [str(i) for i in range(1, 31)]
            seen.append(
                (await store.load_creds("bot"), await store.get_keys("bot", "pre-key", ids))
            )

    client.ws.on_frame = check
    await client.prekey_manager.upload_prekeys(30)
    creds, pre_keys = seen[0]
    assert creds is not None
    assert creds["nextPreKeyId"] == 31
    assert all(isinstance(value, bytes) and len(value) == 32 for value in pre_keys.values())
    assert auth.keys.pending == 0

    # Metadata, in a category of its own.
    await auth.storage.save_metadata("lid", "15550001111", {"lid": "987@lid", "raw": b"\x01"})
    assert await auth.storage.get_metadata("lid", "15550001111") == {
        "lid": "987@lid",
        "raw": b"\x01",
    }
    assert await auth.storage.get_metadata("lid", "absent") is None
    with pytest.raises(InvalidTypeError, match="payload must be a dict"):
        await auth.storage.save_metadata("lid", "k", ["not", "a", "dict"])  # type: ignore[arg-type]
    await auth.flush()
    assert not auth.pending

    # A fresh store instance on the same database: waton gets the same creds back.
    async with _fresh(make_store) as fresh:
        doc = await fresh.load_creds("bot")
        assert doc is not None
        assert doc["pairingCode"] == auth.creds.pairing_code
        assert doc["me"] == {"id": "15550001111@s.whatsapp.net", "name": "~"}
        metadata = await fresh.get_keys("bot", metadata_category("lid"), ["15550001111"])
        assert metadata["15550001111"] == {"lid": "987@lid", "raw": b"\x01"}
        again = await use_waton_auth_state(fresh, "bot", backup_interval=None)
        assert not again.is_new
        assert again.creds == auth.creds
        restarted = _attached(again)  # after a restart, creds not loaded yet either
        assert await restarted.storage.get_creds() is again.creds
        await again.aclose()
    await auth.aclose()


async def test_attach_detach_and_refusals(store: BaseStore, tmp_path: Path) -> None:
    auth = await use_waton_auth_state(store, "s", backup_interval=None)
    client = WAClient(auth.storage)
    detach = auth.attach(client)
    wrapped = vars(client)["send_node"]
    auth.attach(client)  # the same client: attached once
    assert vars(client)["send_node"] is wrapped
    detach()
    assert "send_node" not in vars(client)  # WAClient.send_node again

    # A client on another storage, or on other creds, would save them elsewhere: refused.
    with pytest.raises(InvalidInputError, match="another storage"):
        auth.attach(WAClient(SQLiteStorage(str(tmp_path / "waton.db"))))
    other = await use_waton_auth_state(store, "t", backup_interval=None)
    with pytest.raises(InvalidInputError, match="other creds"):
        auth.attach(WAClient(other.storage))
    stray = WAClient(auth.storage)
    stray.creds = init_auth_creds()
    with pytest.raises(InvalidInputError, match="other creds"):
        auth.attach(stray)
    with pytest.raises(InvalidTypeError, match="WAClient"):
        auth.attach(object())
    assert "send_node" not in vars(stray)

    # aclose() detaches; async with closes.
    async with other:
        auth.attach(client)
        await auth.aclose()
        assert "send_node" not in vars(client)
    assert other.closed


@pytest.mark.parametrize(("options", "error", "allowed"), BAD_OPTIONS)
async def test_bad_options_are_refused_before_any_io(
    options: dict[str, Any], error: type, allowed: str
) -> None:
    with pytest.raises(error, match=allowed):
        await use_waton_auth_state(MemoryStore(), "bot-0", **options)  # never opened


# -- 2. two waton parties talking across a redeploy -----------------------------------


class Party:
    """A waton client on our store: its WAClient (frames through the barrier)
    and its SignalRepository, built as waton builds them, from the storage."""

    ids = count()

    def __init__(self, auth: WatonAuthState, jid: str) -> None:
        self.auth = auth
        self.jid = jid
        self.client = _attached(auth)
        self.repo: SignalRepository
        self.known_senders: set[str] = set()  # whose sender keys this party has

    @classmethod
    async def start(cls, store: BaseStore, jid: str, mode: str) -> Party:
        auth = await use_waton_auth_state(store, jid, key_writes=mode, backup_interval=None)
        party = cls(auth, jid)
        party.client.creds = await party.client.storage.get_creds()  # what connect() does
        party.repo = SignalRepository(party.client.creds, party.client.storage)
        return party

    async def send(self, to: Party, text: str, group: str | None = None) -> BinaryNode:
        """Encrypt and send; return the stanza as it went over the wire."""
        parts = []
        if group is None:
            parts.append(await self.repo.encrypt_message(to.jid, text.encode()))
        else:
            skmsg, distribution = await self.repo.encrypt_group_message(
                group, self.jid, text.encode()
            )
            parts.append(("skmsg", skmsg))
            if self.jid not in to.known_senders:  # the sender key, once, over 1:1
                parts.append(await self.repo.encrypt_message(to.jid, distribution))
                to.known_senders.add(self.jid)
        await self.client.send_node(message(f"m{next(Party.ids)}", to.jid, *parts))
        (stanza,) = frame_nodes(self.client.ws.frames[-1:])
        return stanza

    async def receive(self, sender: Party, stanza: BinaryNode, group: str | None = None) -> str:
        """Decrypt as waton does, then send the receipt (a frame: the barrier)."""
        enc = {child.attrs["type"]: child.content for child in stanza.content}
        for kind in ("pkmsg", "msg"):
            if kind in enc:
                plain = await self.repo.decrypt_message(sender.jid, kind, enc[kind])
                if group is not None:
                    await self.repo.process_sender_key_distribution_message(
                        group, sender.jid, plain
                    )
        if group is not None:
            plain = await self.repo.decrypt_message(
                sender.jid, "skmsg", enc["skmsg"], group_jid=group
            )
        await self.client.send_node(BinaryNode(tag="receipt", attrs={"id": stanza.attrs["id"]}))
        return bytes(plain).decode()


async def _talk(a: Party, b: Party, lines: list[str], group: str | None = None) -> int:
    for n, text in enumerate(lines):
        sender, receiver = (a, b) if n % 2 == 0 else (b, a)
        stanza = await sender.send(receiver, text, group)
        assert await receiver.receive(sender, stanza, group) == text
    return len(lines)


@pytest.mark.parametrize("mode", ["barrier", "write-through"])
async def test_two_waton_parties_talk_across_a_redeploy(
    store: BaseStore, make_store: Callable[..., BaseStore], mode: str, no_timer: None
) -> None:
    started = time.perf_counter()
    alice, bob = await Party.start(store, ALICE, mode), await Party.start(store, BOB, mode)

    # Bob's client makes and "uploads" pre-keys with waton's own code; the
    # server hands Alice his bundle, which she turns into a session.
    bundle = (await bob.repo.generate_prekeys(5))[2]
    signed = bob.auth.creds.signed_pre_key
    await alice.repo.inject_session_from_prekey_bundle(
        BOB,
        registration_id=bob.auth.creds.registration_id,
        identity_key=bob.auth.creds.signed_identity_key["public"],
        signed_prekey_id=signed["keyId"],
        signed_prekey_public=signed["keyPair"]["public"],
        signed_prekey_signature=signed["signature"],
        prekey_id=bundle["keyId"],
        prekey_public=bundle["keyPair"]["public"],
    )
    said = await _talk(alice, bob, ["one", "two", "three", "four"])
    assert frame_nodes(alice.client.ws.frames[:1])[0].content[0].attrs["type"] == "pkmsg"
    said += await _talk(alice, bob, ["group one", "group two", "group three"], GROUP)

    # Redeploy: the processes die after their last frame (nothing closed);
    # every frame waited for what it depended on, so nothing is pending.
    for party in (alice, bob):
        assert party.auth.keys.pending == 0
        assert not party.auth.pending
    async with _fresh(make_store) as fresh:
        alice2, bob2 = await Party.start(fresh, ALICE, mode), await Party.start(fresh, BOB, mode)
        alice2.known_senders, bob2.known_senders = {BOB}, {ALICE}  # in the database
        assert alice2.auth.creds == alice.auth.creds
        said += await _talk(alice2, bob2, ["five", "six", "seven"])
        said += await _talk(alice2, bob2, ["group four", "group five"], GROUP)
        said += await _talk(bob2, alice2, ["group six from bob", "group seven"], GROUP)
        for party in (alice2, bob2):
            await party.auth.aclose()
    for party in (alice, bob):
        await party.auth.aclose()
    print(
        f"waton Signal ({mode}): {said} messages across a redeploy on "
        f"{type(store).__name__}: {time.perf_counter() - started:.3f} s"
    )


async def test_metadata_categories_are_exported_and_copied(
    store: BaseStore, tmp_path: Path
) -> None:
    auth = await use_waton_auth_state(store, "meta", backup_interval=None)
    await auth.storage.save_metadata("lid", "1555", {"lid": "98@lid"})
    await auth.storage.save_metadata("app-state", "version", {"v": 3, "hash": b"\x00" * 8})
    await auth.storage.save_session("1555.0", b"\x0a\x01")
    await auth.aclose()
    exported = await store.export_session("meta")
    assert exported is not None
    assert exported.keys["metadata:lid"] == {"1555": {"lid": "98@lid"}}
    assert exported.keys["metadata:app-state"] == {"version": {"v": 3, "hash": b"\x00" * 8}}
    async with SQLiteStore(tmp_path / "target.db") as target:
        report = await copy_sessions(store, target)
        assert report.ok, report
        again = await use_waton_auth_state(target, "meta", backup_interval=None)
        assert await again.storage.get_metadata("app-state", "version") == {
            "v": 3,
            "hash": b"\x00" * 8,
        }
        assert await again.storage.get_session("1555.0") == b"\x0a\x01"
        await again.aclose()


# -- 3. round trips of a waton fan-out, counted at the proxy --------------------------


@pytest.mark.proxy
async def test_a_waton_fan_out_costs_one_round_trip(
    pg_dsn: str, pg_schema: str, no_timer: None
) -> None:
    params = conninfo_to_dict(pg_dsn)
    proxy = Proxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
    proxy.start()
    try:
        async with PostgresStore(proxy.dsn(pg_dsn), schema=pg_schema) as store:
            jids = device_jids(150)
            party = await Party.start(store, ALICE, "barrier")
            await open_sessions(party.repo, make_bundles(jids))
            await party.client.send_node(message("sessions opened"))
            trips = []
            for devices in (10, 150):
                before = proxy.round_trips
                await fan_out(party.repo, jids[:devices], "hello group")
                await party.client.send_node(message("the fan-out"))  # waits for the barrier
                trips.append(proxy.round_trips - before)
            assert 1 <= trips[0] <= 3  # the barrier's one batch (and nothing sent unstored)
            assert trips[1] == trips[0]  # does not grow with the devices
            await party.auth.aclose()
    finally:
        proxy.stop()
    print(
        f"waton fan-out over PostgreSQL: {trips[0]} round trip(s) for 10 devices, "
        f"{trips[1]} for 150"
    )


# -- 4. a waton client SIGKILLed around its barrier ------------------------------------

CHILD = Path(__file__).with_name("waton_barrier_child.py")


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", "postgres", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)]
)
@pytest.mark.parametrize("killed", ["before the barrier", "after the barrier"])
async def test_a_sigkilled_waton_client_never_sent_what_it_did_not_store(
    backend: str, killed: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        config = {"url": f"sqlite:///{tmp_path / 'crash.db'}"}
    else:
        dsn = request.getfixturevalue("pgbouncer_dsn" if backend == "pgbouncer" else "pg_dsn")
        config = {"url": dsn, "schema": request.getfixturevalue("pg_schema")}
    frames = tmp_path / "frames.hex"
    config |= {"frames": str(frames), "devices": "30", "stop": killed}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        json.dumps(config),
        stdout=subprocess.PIPE,
        cwd=CHILD.parents[1],
        limit=2**24,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        said = json.loads(line)
        assert said["event"] == "ready to die", said
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 30)
    lines = frames.read_bytes().splitlines() if frames.exists() else []
    sent = [node.attrs["id"] for node in frame_nodes(lines)]
    async with open_store(config) as store:
        stored = await store.get_keys("crash", "session", said["changed"])
    if killed == "before the barrier":
        # The ratchet steps of the fan-out are not stored, and no frame carried them.
        assert sent == ["sessions opened"]
        expected = said["before"]
    else:
        assert sent == ["sessions opened", "the fan-out"]
        expected = said["after"]
        assert all(expected[key] != said["before"][key] for key in said["changed"])
    assert stored == {key: expected[key].encode("latin-1") for key in said["changed"]}
