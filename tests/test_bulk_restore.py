"""Bulk restore: many sessions' creds in one statement per page, on every backend."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from wa_session_store import (
    DecodeError,
    InvalidInputError,
    InvalidTypeError,
    PostgresStore,
    RestoreResult,
    close_all,
    restore_all,
)
from wa_session_store.store.base import BaseStore, CredsPage

from .conftest import DSN
from .proxy import Proxy
from .test_auth_state import _corrupt

T = TypeVar("T")

CREDS: dict[str, Any] = {"registrationId": 7, "noiseKey": {"public": b"\x05" * 32}}


async def _seed(store: BaseStore, count: int) -> list[str]:
    ids = [f"bot-{n:04d}" for n in range(count)]
    for n, sid in enumerate(ids):
        await store.save_creds(sid, {**CREDS, "registrationId": n})
    return ids


async def test_pages_cover_every_session_in_id_order(store: BaseStore) -> None:
    ids = await _seed(store, 25)
    await store.set_keys("keys-only", {"pre-key": {"1": b"\x01"}})
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await store.load_creds_page(after, limit=10)
        pages += 1
        seen += list(page.creds)
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == 3
    assert seen == ids  # keys-only sessions have no creds to restore
    assert page.creds["bot-0024"] == {**CREDS, "registrationId": 24}
    assert "3 sessions" in repr(await store.load_creds_page("bot-0021", limit=10))


async def test_iter_creds_pages_reports_bad_documents_per_session(store: BaseStore) -> None:
    await _seed(store, 12)
    await _corrupt(store, "bot-0005")
    pages = [page async for page in store.iter_creds_pages(page_size=5)]
    assert [len(p.creds) + len(p.failed) for p in pages] == [5, 5, 2]
    assert pages[-1].next_after is None
    failed = {sid: exc for p in pages for sid, exc in p.failed.items()}
    assert list(failed) == ["bot-0005"]
    assert isinstance(failed["bot-0005"], DecodeError)
    assert sum(len(p.creds) for p in pages) == 11


async def test_an_exact_multiple_of_the_page_yields_no_empty_page(store: BaseStore) -> None:
    assert [page async for page in store.iter_creds_pages()] == []
    await _seed(store, 4)
    pages = [page async for page in store.iter_creds_pages(page_size=2)]
    assert [len(p.creds) for p in pages] == [2, 2]
    assert await store.load_creds_page("bot-0003") == CredsPage()


async def test_bulk_load_observes_the_stored_versions(make_store: Any) -> None:
    async with make_store() as writer:
        await writer.save_creds("s1", CREDS)
        stored = writer._clock._last
    async with make_store() as reader:
        reader._clock._last = 0
        await reader.load_creds_page()
        assert reader._clock.next() > stored


async def test_page_arguments_are_checked(store: BaseStore) -> None:
    for bad in (0, -1, True, 1.5, 100_001):
        with pytest.raises(InvalidInputError, match="limit"):
            await store.load_creds_page(limit=bad)
    with pytest.raises(InvalidTypeError, match="after"):
        await store.load_creds_page(42)  # type: ignore[arg-type]


async def test_restore_all_brings_back_every_paired_session(store: BaseStore) -> None:
    ids = await _seed(store, 30)
    await store.set_keys("keys-only", {"pre-key": {"1": b"\x01"}})
    store.CREDS_PAGE_SIZE = 7  # type: ignore[misc]  # several pages, a partial last one
    result = await restore_all(store, backup_interval=None)
    assert sorted(result.states) == ids
    assert not result.failed
    auth = result.states["bot-0029"]
    assert auth.creds == {**CREDS, "registrationId": 29}
    auth.creds_updated({**CREDS, "registrationId": 99})
    await auth.flush()
    assert await store.load_creds("bot-0029") == {**CREDS, "registrationId": 99}
    for state in result.states.values():
        await state.aclose()


async def settled(store: PostgresStore) -> None:
    """Wait until every connection of the store's pool is open and idle.

    The pool grows while a caller waits (the schema check at open does), so a
    connection can still be mid-handshake after ``pool.wait()``: accepted by
    the proxy before a measurement, its startup message would count in it.
    """
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        stats = store.pool.get_stats()
        if stats["pool_size"] == stats["pool_available"]:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"the pool did not settle: {stats}")
        await asyncio.sleep(0.01)


async def counted(
    proxy: Proxy, store: PostgresStore, action: Callable[[], Awaitable[T]]
) -> tuple[int, T]:
    """Round trips of ``action`` at the proxy, from a settled pool; measured
    again if a connection opened meanwhile (the pool growing, or replacing
    one the server closed), whose handshake would count too."""
    for _ in range(5):
        await settled(store)
        connections, before = proxy.connections_total, proxy.round_trips
        result = await action()
        if proxy.connections_total == connections:
            return proxy.round_trips - before, result
    pytest.fail("a connection opened during every measurement")


@pytest.mark.postgres
async def test_restore_is_one_statement_per_page(pg_schema: str, proxy: Proxy) -> None:
    async with PostgresStore(DSN, schema=pg_schema) as seeder:
        await _seed(seeder, 250)
    async with PostgresStore(proxy.dsn(DSN), schema=pg_schema, min_size=2, max_size=4) as store:
        sent, page = await counted(proxy, store, lambda: store.load_creds_page(limit=250))
        assert sent == 1
        assert len(page.creds) == 250
        store.CREDS_PAGE_SIZE = 100  # type: ignore[misc]

        async def restore() -> RestoreResult:
            result = await restore_all(store, backup_interval=None)
            await close_all(result.states.values())
            return result

        sent, result = await counted(proxy, store, restore)
        assert sent == 3  # pages of 100, 100 and 50
        assert len(result.states) == 250
        assert store.pool.get_stats()["pool_size"] <= 4


async def test_restore_all_with_preload_reads_each_sessions_keys(store: BaseStore) -> None:
    ids = await _seed(store, 5)
    await store.set_keys("bot-0002", {"session": {"peer.0": {"record": b"\x01"}}})
    result = await restore_all(store, backup_interval=None, preload=True, concurrency=2)
    assert sorted(result.states) == ids
    assert not result.failed
    keys = result.states["bot-0002"].keys
    assert await keys.get("session", ["peer.0"]) == {"peer.0": {"record": b"\x01"}}
    for state in result.states.values():
        await state.aclose()


async def test_restore_and_close_leave_the_collector_as_they_found_it(store: BaseStore) -> None:
    # restore_all pauses the cyclic collector for its bulk read, close_all for
    # its final saves (awaits included).
    await _seed(store, 3)
    assert gc.isenabled()
    result = await restore_all(store, backup_interval=None)
    assert gc.isenabled()
    await close_all(result.states.values())
    assert gc.isenabled()
    gc.disable()
    try:
        result = await restore_all(store, backup_interval=None)
        assert not gc.isenabled()  # an application that runs without it keeps it off
        await close_all(result.states.values())
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.postgres
async def test_a_restore_cancelled_halfway_closes_what_it_opened(
    pg_schema: str, proxy: Proxy
) -> None:
    # A SIGTERM during start-up, say: the caller never gets the result, so the
    # states already opened (with their backup timers) must not be left running.
    from wa_session_store.auth.auth_state import _open_states

    async with PostgresStore(DSN, schema=pg_schema) as seeder:
        await _seed(seeder, 40)
    proxy.delay(0.005)  # each page a few round trips of 10 ms: time to cancel in between
    async with PostgresStore(proxy.dsn(DSN), schema=pg_schema) as store:
        store.CREDS_PAGE_SIZE = 5  # type: ignore[misc]
        before = set(_open_states)
        task = asyncio.ensure_future(restore_all(store, backup_interval=60.0))
        while not set(_open_states) - before:  # the first page's states are open
            assert not task.done()
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert set(_open_states) - before == set()
