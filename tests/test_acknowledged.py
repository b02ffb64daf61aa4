"""Nothing acknowledged is lost, on every backend and in both key modes: the
outside attack's examples of the key store, through ``use_auth_state`` (the
write log's model test, ``test_write_log.py``, covers the whole class)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wa_session_store import (
    AuthKeys,
    InvalidTypeError,
    StoreUnavailableError,
    close_all,
    use_auth_state,
)
from wa_session_store.store.base import BaseStore

from .support.faulty import Faulty

SID = "acked-bot"
MODES = ["write-through", "barrier"]


@pytest.fixture
def no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pending writes wait for an explicit barrier (no flush on a timer)."""
    monkeypatch.setattr(AuthKeys, "FLUSH_DELAY", 3600.0)


async def stored(store: BaseStore, category: str, key_id: str) -> Any:
    return (await store.get_keys(SID, category, [key_id]))[key_id]


@pytest.mark.parametrize("mode", MODES)
async def test_a_task_outliving_its_transaction_writes_on_its_own(
    store: BaseStore, mode: str, no_timer: None
) -> None:
    auth = await use_auth_state(store, SID, key_writes=mode, backup_interval=None)  # type: ignore[arg-type]  # a mode from MODES
    block_ended = asyncio.Event()

    async def handler() -> None:  # started inside the block: it inherits the transaction
        await block_ended.wait()
        await auth.keys.set({"session": {"late": b"after the block"}})

    async with auth.keys.transaction():
        task = asyncio.create_task(handler())
        await auth.keys.set({"session": {"inside": b"in the block"}})
    block_ended.set()
    await task
    await auth.keys.flush()
    assert await stored(store, "session", "late") == b"after the block"
    assert await stored(store, "session", "inside") == b"in the block"
    await auth.aclose()


async def test_a_write_during_the_final_flush_of_aclose_is_stored(store: BaseStore) -> None:
    """The SIGTERM path of a bot still handling messages, in barrier mode."""
    held = Faulty(store)
    auth = await use_auth_state(held, SID, key_writes="barrier", backup_interval=None)  # type: ignore[arg-type]  # a real store behind a gate
    await auth.keys.set({"session": {"before": b"1"}})
    held.gate = gate = asyncio.Event()
    closing = asyncio.create_task(close_all([auth]))
    await held.arrived.wait()  # the final flush is in flight
    writing = asyncio.create_task(auth.keys.set({"session": {"during": b"2"}}))
    await asyncio.sleep(0)
    held.gate = None
    gate.set()
    assert await closing == {}  # nothing lost, and truly so:
    await writing
    assert auth.keys.pending == 0
    assert await stored(store, "session", "before") == b"1"
    assert await stored(store, "session", "during") == b"2"


async def test_close_all_names_the_session_whose_key_writes_were_not_stored(
    store: BaseStore, no_timer: None
) -> None:
    failing = Faulty(store)
    auth = await use_auth_state(failing, SID, key_writes="barrier", backup_interval=None)  # type: ignore[arg-type]  # a real store that fails once
    await auth.keys.set({"session": {"a": b"1"}})
    failing.fail = "before"
    failed = await close_all([auth])
    assert set(failed) == {SID}
    assert isinstance(failed[SID], StoreUnavailableError)
    assert auth.keys.pending == 1  # says what was not stored


@pytest.mark.parametrize("mode", MODES)
async def test_preload_never_brings_back_what_pending_writes_replaced(
    store: BaseStore, mode: str, no_timer: None
) -> None:
    await store.set_keys(SID, {"session": {"a": b"old"}, "pre-key": {"5": {"public": b"p"}}})
    auth = await use_auth_state(store, SID, key_writes=mode, backup_interval=None)  # type: ignore[arg-type]  # a mode from MODES
    await auth.keys.set({"session": {"a": b"new"}, "pre-key": {"5": None}})
    await auth.keys.preload(["session", "pre-key"])
    assert await auth.keys.get("session", ["a"]) == {"a": b"new"}
    await auth.keys.flush()
    assert await auth.keys.get("session", ["a"]) == {"a": b"new"}
    assert await auth.keys.get("pre-key", ["5"]) == {"5": None}  # not resurrected
    assert await stored(store, "session", "a") == b"new"
    assert await stored(store, "pre-key", "5") is None
    await auth.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_preload_racing_a_flush_keeps_the_newest_value(
    store: BaseStore, mode: str, no_timer: None
) -> None:
    """The page was read before the flush landed: it must not enter the cache."""
    await store.set_keys(SID, {"session": {"a": b"old"}})
    held = Faulty(store)
    auth = await use_auth_state(held, SID, key_writes=mode, backup_interval=None)  # type: ignore[arg-type]  # a real store behind a gate
    held.gate = gate = asyncio.Event()
    writing = asyncio.create_task(auth.keys.set({"session": {"a": b"new"}}))
    flushing = asyncio.create_task(auth.keys.flush())
    await held.arrived.wait()
    await auth.keys.preload(["session"])  # reads "old" while "new" is in flight
    held.gate = None
    gate.set()
    await asyncio.gather(writing, flushing)
    assert await auth.keys.get("session", ["a"]) == {"a": b"new"}
    await auth.aclose()


@pytest.mark.parametrize("first", ["set", "clear"])
async def test_a_write_through_set_racing_clear_agrees_with_the_store(
    store: BaseStore, first: str
) -> None:
    auth = await use_auth_state(store, SID, backup_interval=None)
    for round_ in range(20):
        await store.set_keys(SID, {"session": {"k": b"old"}})
        await auth.keys.get("session", ["k"])  # cached
        value = round_.to_bytes(2, "big")
        ops = [auth.keys.set({"session": {"k": value}}), auth.keys.clear()]
        await asyncio.gather(*(ops if first == "set" else ops[::-1]))
        want = None if first == "set" else value  # the later call wins
        assert await stored(store, "session", "k") == want
        assert await auth.keys.get("session", ["k"]) == {"k": want}, round_
    await auth.aclose()


async def test_transactions_with_one_key_run_one_at_a_time(store: BaseStore) -> None:
    """Baileys' convention, ``keys.transaction(key)``, as Python ports call it."""
    auth = await use_auth_state(store, SID, key_writes="barrier", backup_interval=None)
    order: list[str] = []
    first_inside = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with auth.keys.transaction("15550001111@s.whatsapp.net"):
            order.append("first in")
            async with auth.keys.transaction("15550001111@s.whatsapp.net"):  # joins, no wait
                await auth.keys.set({"session": {"a": b"1"}})
            first_inside.set()
            await release_first.wait()
            order.append("first out")

    async def second() -> None:
        await first_inside.wait()
        async with auth.keys.transaction("15550001111@s.whatsapp.net"):
            order.append("second in")
            assert await auth.keys.get("session", ["a"]) == {"a": b"1"}  # the first committed

    async def other_key() -> None:
        await first_inside.wait()
        async with auth.keys.transaction("group@g.us"):
            order.append("other in")  # not held up by the first block's key
        release_first.set()

    await asyncio.wait_for(asyncio.gather(first(), second(), other_key()), 30)
    assert order == ["first in", "other in", "first out", "second in"]
    assert auth.keys._key_locks == {}  # nothing kept once no block holds a key
    with pytest.raises(InvalidTypeError, match="a transaction key must be a str or None"):
        auth.keys.transaction(42)  # type: ignore[arg-type]  # the point
    assert await stored(store, "session", "a") == b"1"
    await auth.aclose()
