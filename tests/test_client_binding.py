"""The client binding on its own, against a small client written here: frames
wait for the barrier in order and are refused when it fails, detach puts the
send method back, a client with no choke point writes through, and the
binding's reports (event or call) reach the throttled save."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wa_session_store import (
    AuthKeys,
    InvalidInputError,
    InvalidTypeError,
    MemoryStore,
    SQLiteStore,
    StoreUnavailableError,
)
from wa_session_store.integrations.client_binding import (
    ClientAuthState,
    ClientBinding,
    ClientParts,
    use_client_auth_state,
)
from wa_session_store.store.base import BaseStore


@dataclass
class Creds:
    registration_id: int
    next_pre_key_id: int = 1
    platform: str | None = None


class Emitter:
    """The client's creds event, on its own (as pyaileys' event emitter is)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[..., None]] = []


class Client(Emitter):
    """A client with an event for creds, and one method every frame leaves through."""

    def __init__(self, creds: Creds | None, keys: Any) -> None:
        super().__init__()
        self.creds, self.keys = creds, keys
        self.sent: list[bytes] = []

    def emit(self) -> None:
        for listener in list(self.listeners):
            listener(self.creds)

    async def send_frame(self, frame: bytes) -> str:
        self.sent.append(frame)
        return "sent"


class Binding(ClientBinding[Creds]):
    client_name = "test"
    creds_type = Creds
    send_method: str | None = "send_frame"

    def new_creds(self) -> Creds:
        return Creds(registration_id=7)

    def creds_to_document(self, creds: Creds, *, base: Any = None) -> dict[str, Any]:
        doc = {**(base or {}), "registrationId": creds.registration_id}
        doc["nextPreKeyId"] = creds.next_pre_key_id
        if creds.platform is not None:
            doc["platform"] = creds.platform
        return doc

    def creds_from_document(self, doc: Any) -> Creds:
        return Creds(doc["registrationId"], doc["nextPreKeyId"], doc.get("platform"))

    def subscribe(self, anchor: Any, listener: Callable[..., None]) -> None:
        anchor.listeners.append(listener)

    def unsubscribe(self, anchor: Any, listener: Callable[..., None]) -> None:
        anchor.listeners.remove(listener)

    def parts(self, client: object) -> ClientParts:
        if isinstance(client, Client):
            return ClientParts(client, client.creds, client)
        if isinstance(client, Emitter):  # an emitter alone: creds, no frames
            return ClientParts(client)
        raise InvalidTypeError(f"not a test client: {type(client).__name__}")


class NoFrames(Binding):
    send_method = None


class FailingSets:
    """A real store whose next ``set_keys`` fails as an outage would."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self.fail = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name != "set_keys":
            return attr

        async def set_keys(*args: Any, **kwargs: Any) -> Any:
            if self.fail:
                self.fail -= 1
                raise StoreUnavailableError("set_keys", "bot", 3, 0.1, ConnectionError("away"))
            return await attr(*args, **kwargs)

        return set_keys


@pytest.fixture
def no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 3600.0)


async def _attached(store: Any, **options: Any) -> tuple[ClientAuthState[Creds], Client]:
    auth = await use_client_auth_state(store, "bot", Binding(), backup_interval=None, **options)
    client = Client(auth.creds, auth.keys)
    auth.attach(client)
    return auth, client


async def test_frames_wait_for_the_barrier_in_order(store: BaseStore, no_timer: None) -> None:
    auth, client = await _attached(store)
    assert auth.is_new
    assert (auth.keys.mode, await store.load_creds("bot")) == (
        "barrier",
        {
            "registrationId": 7,
            "nextPreKeyId": 1,
        },
    )
    await client.keys.set({"session": {"a.0": b"step 1"}})
    assert (await store.get_keys("bot", "session", ["a.0"]))["a.0"] is None  # pending
    first = asyncio.create_task(client.send_frame(b"one"))
    second = asyncio.create_task(client.send_frame(b"two"))
    assert await first == "sent"  # what the client's method returns comes back
    await second
    assert client.sent == [b"one", b"two"]
    assert (await store.get_keys("bot", "session", ["a.0"]))["a.0"] == b"step 1"
    await auth.aclose()


async def test_a_frame_whose_barrier_fails_is_not_sent(no_timer: None, tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "s.db") as real:
        failing = FailingSets(real)
        auth, client = await _attached(failing)
        await client.keys.set({"session": {"a.0": b"step"}})
        failing.fail = 1
        with pytest.raises(StoreUnavailableError):
            await client.send_frame(b"depends on the step")
        assert client.sent == []
        assert auth.keys.pending == 1
        await client.send_frame(b"depends on the step")  # the next frame stores it first
        assert client.sent == [b"depends on the step"]
        assert (await real.get_keys("bot", "session", ["a.0"]))["a.0"] == b"step"
        await auth.aclose()


async def test_reports_reach_the_throttled_save(store: BaseStore) -> None:
    auth, client = await _attached(store, throttle=3600)
    client.emit()  # nothing changed: nothing to save
    assert not auth.pending
    auth.creds.platform = "android"
    client.emit()  # throttled
    assert auth.pending
    replaced = Creds(registration_id=7, next_pre_key_id=31)
    client.creds = replaced
    client.emit()  # another creds object: it becomes current; counters moved: urgent
    assert auth.creds is replaced
    await auth.barrier()
    assert await store.load_creds("bot") == {"registrationId": 7, "nextPreKeyId": 31}
    await auth.aclose()


async def test_attach_detach_and_the_refusal_of_other_creds(
    store: BaseStore, caplog: pytest.LogCaptureFixture
) -> None:
    auth, client = await _attached(store)
    own = Client.send_frame
    previous = vars(client)["send_frame"]
    detach = auth.attach(client)  # attached once: one listener, one wrapper
    assert len(client.listeners) == 1
    assert vars(client)["send_frame"] is previous
    detach()
    assert client.listeners == []
    assert "send_frame" not in vars(client)
    assert client.send_frame.__func__ is own  # type: ignore[attr-defined]

    # A send method the instance already had of its own is put back as it was.
    async def instrumented(frame: bytes) -> str:
        return "instrumented"

    client.send_frame = instrumented  # type: ignore[method-assign]
    auth.attach(client)
    assert client.send_frame is not instrumented
    auth.detach(client)
    assert client.send_frame is instrumented

    with pytest.raises(InvalidInputError, match="other creds than session 'bot'"):
        auth.attach(Client(Creds(registration_id=7), auth.keys))
    auth.attach(Client(None, auth.keys))  # creds not loaded yet: nothing to check
    with pytest.raises(InvalidTypeError, match="not a test client"):
        auth.attach(object())
    with caplog.at_level(logging.WARNING, logger="wa_session_store"):
        auth.attach(Emitter())  # an anchor without a sender, keys in barrier mode
    assert "no outgoing frame waits for its key writes" in caplog.text
    await auth.aclose()
    assert auth.closed


async def test_no_choke_point_means_write_through(store: BaseStore) -> None:
    async with await use_client_auth_state(store, "bot", NoFrames()) as auth:
        assert auth.keys.mode == "write-through"
        await auth.keys.set({"session": {"a.0": b"stored before set returns"}})
        assert (await store.get_keys("bot", "session", ["a.0"]))["a.0"] is not None
        client = Client(auth.creds, auth.keys)
        auth.attach(client)
        assert "send_frame" not in vars(client)  # nothing to wrap


async def test_barrier_without_a_send_method_is_refused_before_any_io() -> None:
    never_opened = MemoryStore()
    with pytest.raises(InvalidInputError, match="key_writes='write-through'"):
        await use_client_auth_state(never_opened, "bot", NoFrames(), key_writes="barrier")
    with pytest.raises(InvalidInputError, match="throttle"):
        await use_client_auth_state(never_opened, "bot", Binding(), throttle=-1)
    with pytest.raises(InvalidTypeError, match="ClientBinding"):
        await use_client_auth_state(never_opened, "bot", object())  # type: ignore[arg-type]
