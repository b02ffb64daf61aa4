"""Many leases, one statement: batched renewal and release (LeaseRenewer, SessionWorker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from wa_session_store import (
    InvalidInputError,
    Lease,
    LeaseLostError,
    PostgresStore,
    RetryPolicy,
    SessionWorker,
    StoreUnavailableError,
)
from wa_session_store.backends.lease_workers import LeaseRenewer

from .conftest import DSN
from .proxy import Proxy
from .test_leases import _expire, pg  # noqa: F401  # direct and through PgBouncer

pytestmark = pytest.mark.postgres


@pytest.fixture
async def counted(pg_schema: str, proxy: Proxy) -> AsyncIterator[PostgresStore]:
    """A store whose statements the proxy counts (``proxy.round_trips``)."""
    async with PostgresStore(proxy.dsn(DSN), schema=pg_schema, max_size=4) as store:
        yield store


async def _seed(store: PostgresStore, count: int) -> None:
    for n in range(count):
        await store.save_creds(f"bot-{n:03d}", {"n": n})


async def test_renew_many_in_one_statement_and_lose_one_individually(
    counted: PostgresStore, proxy: Proxy
) -> None:
    await _seed(counted, 30)
    leases = await counted.claim_sessions("w1", limit=30, ttl=30)
    assert len(leases) == 30
    victim = leases[7]
    await _expire(counted, victim.session_id)
    thief = await counted.acquire_lease(victim.session_id, owner="w2", ttl=30)
    reasons: list[BaseException] = []
    victim.on_lost(lambda _lease, reason: reasons.append(reason))
    before_expiry = {lease.session_id: lease.expires_at for lease in leases}
    await asyncio.sleep(0.05)  # server time moves on, so renewed expiries grow

    before = proxy.round_trips
    lost = await counted.renew_leases(leases)
    assert proxy.round_trips - before == 1
    assert lost == [victim]
    assert victim.lost
    assert isinstance(reasons[0], LeaseLostError)
    assert "'w2'" in str(reasons[0])
    assert thief.token > victim.token
    for lease in leases:
        if lease is not victim:
            assert not lease.lost
            assert lease.expires_at > before_expiry[lease.session_id]
    assert (await counted.lease_holder(victim.session_id))[0] == "w2"  # type: ignore[index]

    before = proxy.round_trips
    assert await counted.release_leases(leases) == 29  # the victim is skipped
    assert proxy.round_trips - before == 1
    assert all(lease.lost for lease in leases)
    assert len(await counted.claim_sessions("w3", limit=100)) == 29
    assert await counted.renew_leases(leases) == []  # nothing left to renew
    assert await counted.release_leases(leases) == 0


async def test_batched_renewal_and_release_work_through_pgbouncer(pg: PostgresStore) -> None:  # noqa: F811
    await _seed(pg, 5)
    leases = await pg.claim_sessions("w1", limit=5, ttl=30)
    assert await pg.renew_leases(leases) == []
    assert await pg.release_leases(leases) == 5
    assert len(await pg.claim_sessions("w2", limit=5)) == 5


async def test_renewer_sends_one_statement_a_period(counted: PostgresStore, proxy: Proxy) -> None:
    await _seed(counted, 40)
    leases = await counted.claim_sessions("w1", limit=40, ttl=3.0)
    renewer = LeaseRenewer(counted, every=0.5)
    for lease in leases:
        renewer.add(lease)
    assert len(renewer) == 40
    before = proxy.round_trips
    await asyncio.sleep(1.3)  # two periods
    sent = proxy.round_trips - before
    await renewer.aclose()
    assert 1 <= sent <= 3  # one a period, whatever the lease count
    assert not any(lease.lost for lease in leases)
    with pytest.raises(InvalidInputError, match="closed"):
        renewer.add(leases[0])


async def test_renewer_marks_leases_lost_when_no_renewal_lands_in_time(
    pg_schema: str, proxy: Proxy
) -> None:
    retry = RetryPolicy(attempts=1, timeout=0.5)
    async with PostgresStore(proxy.dsn(DSN), schema=pg_schema, retry=retry) as store:
        await _seed(store, 3)
        leases = await store.claim_sessions("w1", limit=3, ttl=1.0)
        renewer = LeaseRenewer(store, every=0.3)
        lost = asyncio.Event()
        reasons: list[BaseException] = []

        def on_lost(_lease: Lease, reason: BaseException) -> None:
            reasons.append(reason)
            if len(reasons) == 3:
                lost.set()

        for lease in leases:
            lease.on_lost(on_lost)
            renewer.add(lease)
        proxy.refuse()
        await asyncio.wait_for(lost.wait(), 10)
        proxy.restore()
        assert all(isinstance(reason, StoreUnavailableError) for reason in reasons)
        assert len(renewer) == 0
        await renewer.aclose()


async def test_renewer_arguments_are_checked(pg: PostgresStore) -> None:  # noqa: F811
    for bad in (0, -1, float("nan"), True, "1"):
        with pytest.raises(InvalidInputError, match="every"):
            LeaseRenewer(pg, every=bad)  # type: ignore[arg-type]
    async with PostgresStore(DSN, schema=pg.schema.schema) as other:
        await other.save_creds("s1", {"n": 1})
        lease = await other.acquire_lease("s1", owner="a")
        with pytest.raises(InvalidInputError, match="another store"):
            LeaseRenewer(pg).add(lease)
        await lease.release()


async def _idle(lease: Lease) -> None:
    await asyncio.Event().wait()


async def test_worker_renews_in_one_statement_and_releases_in_one(
    counted: PostgresStore, proxy: Proxy
) -> None:
    await _seed(counted, 60)
    started: set[str] = set()
    full = asyncio.Event()

    async def handler(lease: Lease) -> None:
        started.add(lease.session_id)
        if len(started) == 60:
            full.set()
        await asyncio.Event().wait()

    worker = SessionWorker(counted, "w1", handler, capacity=60, ttl=1.5, claim_batch=60)
    task = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(full.wait(), 10)
    before = proxy.round_trips
    await asyncio.sleep(1.2)  # at capacity: no claims, two or three renewals of 0.5 s
    renewals = proxy.round_trips - before
    assert 1 <= renewals <= 3
    assert len(worker.sessions) == 60

    before = proxy.round_trips
    await worker.stop()
    await task
    assert proxy.round_trips - before == 1  # every lease released at once
    assert worker.sessions == []
    assert len(await counted.claim_sessions("w2", limit=100)) == 60


async def test_renewer_releases_in_one_statement_and_its_task_ends_when_empty(
    counted: PostgresStore, proxy: Proxy
) -> None:
    await _seed(counted, 10)
    leases = await counted.claim_sessions("w1", limit=10, ttl=3.0)
    renewer = LeaseRenewer(counted, every=0.2)
    for lease in leases:
        renewer.add(lease)
    await asyncio.sleep(0.3)  # a renewal went by
    before = proxy.round_trips
    assert await renewer.release(leases[:6]) == 6
    assert proxy.round_trips - before == 1
    assert len(renewer) == 4
    assert all(lease.lost for lease in leases[:6])
    assert await renewer.release(leases) == 4  # the released ones are skipped
    await asyncio.sleep(0.5)
    assert renewer._task is None  # nothing left to renew: the task ended
    again = await counted.claim_sessions("w1", limit=1, ttl=3.0)
    renewer.add(again[0])  # starts it again
    assert renewer._task is not None
    await asyncio.sleep(0.3)
    assert not again[0].lost
    await renewer.aclose()
    await counted.release_leases(again)
