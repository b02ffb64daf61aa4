"""Creds saves that do not land say so: a host behind another's fast clock, on
every backend (conftest's ``make_store``), and fenced saves (PostgreSQL leases)."""

from __future__ import annotations

import asyncio
import time

import pytest

from wa_session_store import CredsConflictError, PostgresStore, StoreOperationError
from wa_session_store.store.base import BaseStore
from wa_session_store.testing import CREDS

from .conftest import StoreFactory

# -- creds saves that do not land say so ------------------------------------------

SKEW_NS = 60 * 10**9


def _host(make_store: StoreFactory, *, skew_ns: int = 0) -> BaseStore:
    """Another process on the same database, its wall clock ``skew_ns`` ahead.

    (An option makes make_store build a new instance, with its own clock, on
    every backend; the memory ones share their sessions.)
    """
    host = make_store(max_value_size=1 << 20)
    if skew_ns:
        host._clock.now = lambda: time.time_ns() + skew_ns
    return host


async def test_a_save_behind_a_fast_clock_says_so_and_the_next_save_lands(
    make_store: StoreFactory,
) -> None:
    fast, host = _host(make_store, skew_ns=SKEW_NS), _host(make_store)
    first = {**CREDS, "registrationId": 1}
    async with fast, host:
        await fast.save_creds("s1", first)
        # Called later, by a host that did not load first: it used to return
        # normally while the store kept the first document.
        with pytest.raises(CredsConflictError) as info:
            await host.save_creds("s1", CREDS)
        error = info.value
        assert isinstance(error, StoreOperationError)
        assert (error.session_id, error.stored_version) == ("s1", fast._clock._last)
        assert 0 < error.stored_version - error.version <= SKEW_NS
        assert "did not land" in str(error)
        assert "c2VjcmV0" not in str(error)
        assert await fast.load_creds("s1") == first
        # The refused save taught the host the stored version: the next lands.
        await host.save_creds("s1", CREDS)
        assert await fast.load_creds("s1") == CREDS


async def test_two_hosts_behind_one_fast_clock_cannot_hide_each_other_s_save(
    make_store: StoreFactory,
) -> None:
    # Both load creds a fast clock saved, so both version their next save one
    # above it: the same version. The second used to return normally, unsaved.
    fast = _host(make_store, skew_ns=SKEW_NS)
    a, b = _host(make_store), _host(make_store)
    async with fast, a, b:
        await fast.save_creds("s1", {"by": "fast"})
        assert await a.load_creds("s1") == await b.load_creds("s1") == {"by": "fast"}
        await a.save_creds("s1", {"by": "a"})
        with pytest.raises(CredsConflictError, match="other creds of the same version"):
            await b.save_creds("s1", {"by": "b"})
        assert await fast.load_creds("s1") == {"by": "a"}
        await b.save_creds("s1", {"by": "b"})
        assert await fast.load_creds("s1") == {"by": "b"}


async def test_a_retry_whose_first_attempt_landed_returns_normally(store: BaseStore) -> None:
    """What a retry after a lost answer does: the same call, the same version, again."""
    blob = store._rows.creds_value("s1", CREDS)
    version = store._clock.next()
    assert await store._write_creds("s1", blob, version, 5.0)  # the answer is lost
    store._clock._last, store._clock.now = version - 1, lambda: 0  # the retry's version
    await store.save_creds("s1", CREDS)
    assert await store.load_creds("s1") == CREDS


async def test_a_late_write_never_replaces_a_newer_save_and_says_so_when_it_cannot_tell(
    make_store: StoreFactory,
) -> None:
    """An older save whose write reaches the store after a newer one: it never
    replaces it. Overtaken by a later save of the same store, it returns (it
    was stored, then replaced); overtaken by another process's, it cannot
    know which was called first, and says it did not land."""
    host, other = _host(make_store), _host(make_store)
    real_write = host._write_creds
    arrived, go = asyncio.Event(), asyncio.Event()
    held = True

    async def slow_network(sid: str, blob: bytes, version: int, timeout: float) -> bool:
        nonlocal held
        if held:  # only the first write: the older save's
            held = False
            arrived.set()
            await go.wait()
        return await real_write(sid, blob, version, timeout)

    host._write_creds = slow_network  # type: ignore[method-assign]  # the network, delayed
    async with host, other:
        for newer in (host, other):
            held = True
            arrived.clear(), go.clear()
            older = asyncio.ensure_future(host.save_creds("s1", {"n": 1}))
            await arrived.wait()
            await newer.save_creds("s1", {"n": 2})
            go.set()
            if newer is host:
                await older
            else:
                with pytest.raises(CredsConflictError, match="another process"):
                    await older
            assert await other.load_creds("s1") == {"n": 2}
            await other.delete_session("s1")


async def test_a_fenced_save_behind_the_last_owner_s_fast_clock_says_so_then_lands(
    pg_dsn: str, pg_schema: str
) -> None:
    async with (
        PostgresStore(pg_dsn, schema=pg_schema) as old_owner,
        PostgresStore(pg_dsn, schema=pg_schema) as new_owner,
    ):
        old_owner._clock.now = lambda: time.time_ns() + 60 * 10**9
        lease = await old_owner.acquire_lease("s1", owner="old")
        await old_owner.save_creds("s1", {"by": "old"}, fence=lease)
        await lease.release()
        # The new owner holds the newest lease but did not load the creds.
        lease = await new_owner.acquire_lease("s1", owner="new")
        with pytest.raises(CredsConflictError, match="did not land"):
            await new_owner.save_creds("s1", {"by": "new"}, fence=lease)
        assert await old_owner.load_creds("s1") == {"by": "old"}
        await new_owner.save_creds("s1", {"by": "new"}, fence=lease)
        assert await old_owner.load_creds("s1") == {"by": "new"}
        await lease.release()
