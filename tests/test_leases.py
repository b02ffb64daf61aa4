"""Leases with fencing tokens on PostgreSQL (coroutine level; processes are in test_deploy.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wa_session_store import (
    InvalidInputError,
    Lease,
    LeaseLostError,
    LeaseUnavailableError,
    MemoryStore,
    PostgresStore,
    SessionWorker,
    use_auth_state,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
async def pg(
    request: pytest.FixtureRequest, pg_dsn: str, pg_schema: str
) -> AsyncIterator[PostgresStore]:
    if request.param == "pgbouncer":
        dsn, options = request.getfixturevalue("pgbouncer_dsn"), {"prepare_threshold": None}
    else:
        dsn, options = pg_dsn, {}
    async with PostgresStore(dsn, schema=pg_schema, max_size=6, **options) as store:
        yield store


async def _expire(store: PostgresStore, session_id: str) -> None:
    """Make the current lease of a session expire now, as if its owner stopped renewing."""
    from psycopg import sql

    async with store.pool.connection() as conn:
        await conn.execute(
            sql.SQL(
                "UPDATE {} SET expires_at = now() - interval '1 second' WHERE session_id = %s"
            ).format(store.schema.names["leases"]),
            (session_id,),
        )


async def test_one_owner_at_a_time(pg: PostgresStore) -> None:
    a = await pg.acquire_lease("s1", owner="a", ttl=30)
    assert (a.session_id, a.owner, a.token) == ("s1", "a", 1)
    with pytest.raises(LeaseUnavailableError) as info:
        await pg.acquire_lease("s1", owner="b", ttl=30)
    assert info.value.holder == "a"
    assert info.value.expires_at == a.expires_at
    assert "leased to 'a' until" in str(info.value)
    await a.release()
    b = await pg.acquire_lease("s1", owner="b")
    assert b.token == 2
    assert await pg.lease_holder("s1") == ("b", 2, b.expires_at)


async def test_tokens_strictly_increase_and_are_never_reused(pg: PostgresStore) -> None:
    tokens = []
    for n in range(5):
        lease = await pg.acquire_lease("s1", owner=f"o{n}")
        tokens.append(lease.token)
        await lease.release()
    await pg.save_creds("s1", {"x": 1})
    await pg.delete_session("s1")  # deleting the session keeps the token history
    tokens.append((await pg.acquire_lease("s1", owner="last")).token)
    assert tokens == sorted(set(tokens))
    assert tokens == [1, 2, 3, 4, 5, 6]


async def test_waiting_for_release_and_for_expiry(pg: PostgresStore) -> None:
    a = await pg.acquire_lease("s1", owner="a", ttl=30)
    waiter = asyncio.ensure_future(pg.acquire_lease("s1", owner="b", wait=5))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    await a.release()
    b = await asyncio.wait_for(waiter, 5)
    assert b.owner == "b"
    # b stops renewing: its lease runs out and c gets it without a release.
    short = await pg.acquire_lease("s2", owner="b", ttl=0.5)
    started = asyncio.get_running_loop().time()
    c = await pg.acquire_lease("s2", owner="c", wait=5)
    waited = asyncio.get_running_loop().time() - started
    assert c.token == short.token + 1
    assert 0.2 < waited < 2.0
    with pytest.raises(LeaseUnavailableError):
        await pg.acquire_lease("s2", owner="d", wait=0.3)


async def test_renew_and_loss(pg: PostgresStore) -> None:
    a = await pg.acquire_lease("s1", owner="a", ttl=5)
    before = a.expires_at
    await asyncio.sleep(0.05)
    await a.renew()
    assert a.expires_at > before
    await _expire(pg, "s1")
    await pg.acquire_lease("s1", owner="b")
    with pytest.raises(LeaseLostError) as info:
        await a.renew()
    assert (info.value.holder, info.value.holder_token) == ("b", 2)
    assert a.lost


async def test_fenced_writes_of_a_replaced_owner_never_land(pg: PostgresStore) -> None:
    a = await pg.acquire_lease("s1", owner="a")
    await pg.save_creds("s1", {"by": "a"}, fence=a)
    await pg.set_keys("s1", {"session": {"peer": b"a"}}, fence=a)
    await _expire(pg, "s1")
    b = await pg.acquire_lease("s1", owner="b")
    await pg.save_creds("s1", {"by": "b"}, fence=b)
    await pg.set_keys("s1", {"session": {"peer": b"b"}}, fence=b)
    for late in (
        pg.save_creds("s1", {"by": "a, late"}, fence=a),
        pg.set_keys("s1", {"session": {"peer": b"a, late"}, "pre-key": {"9": 1}}, fence=a),
        pg.set_keys("s1", {"session": {"peer": None}}, fence=a),
        pg.clear_keys("s1", fence=a),
    ):
        with pytest.raises(LeaseLostError, match="now held by 'b'"):
            await late
    assert await pg.load_creds("s1") == {"by": "b"}
    assert await pg.get_keys("s1", "session", ["peer"]) == {"peer": b"b"}
    assert await pg.get_keys("s1", "pre-key", ["9"]) == {"9": None}


async def test_a_fence_for_another_session_or_store_is_refused(
    pg: PostgresStore, tmp_path: Any
) -> None:
    a = await pg.acquire_lease("s1", owner="a")
    with pytest.raises(InvalidInputError, match="lease is for session 's1'"):
        await pg.save_creds("s2", {"x": 1}, fence=a)
    async with MemoryStore() as memory:
        with pytest.raises(InvalidInputError, match="cannot fence"):
            await memory.save_creds("s1", {"x": 1}, fence=a)
    with pytest.raises(InvalidInputError, match="lease is for session"):
        await use_auth_state(pg, "s2", lease=a)


async def test_fencing_holds_under_a_race_with_the_new_grant(pg: PostgresStore) -> None:
    """An old owner writing in a tight loop while a new owner takes over: after the
    grant, not one of the old owner's writes lands."""
    for round_ in range(5):
        sid = f"race-{round_}"
        a = await pg.acquire_lease(sid, owner="a", ttl=30)
        landed: list[int] = []
        stop = asyncio.Event()

        async def old_owner(
            lease: Lease = a, sid: str = sid, landed: list[int] = landed, stop: Any = stop
        ) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    await pg.set_keys(sid, {"session": {"peer": {"n": n}}}, fence=lease)
                    landed.append(n)
                except LeaseLostError:
                    return

        writer = asyncio.ensure_future(old_owner())
        await asyncio.sleep(0.05)
        await _expire(pg, sid)
        b = await pg.acquire_lease(sid, owner="b")
        last_before_grant = landed[-1] if landed else 0
        await pg.set_keys(sid, {"session": {"peer": {"by": "b"}}}, fence=b)
        await asyncio.sleep(0.05)
        stop.set()
        await writer
        assert await pg.get_keys(sid, "session", ["peer"]) == {"peer": {"by": "b"}}
        # At most the write in flight at the grant committed before it (it held the row).
        assert len(landed) <= last_before_grant + 1


async def test_auth_state_of_a_replaced_owner(
    pg: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    a = await pg.acquire_lease("s1", owner="a")
    lost: list[str] = []
    auth = await use_auth_state(
        pg,
        "s1",
        lease=a,
        throttle=30.0,
        backup_interval=None,
        on_lost=lambda state: lost.append(state.session_id),
    )
    await auth.save_creds({"counter": 0})
    auth.creds_updated({"counter": 1})  # throttled: pending
    assert auth.pending
    await _expire(pg, "s1")
    b = await pg.acquire_lease("s1", owner="b")
    await pg.save_creds("s1", {"counter": 100}, fence=b)
    with pytest.raises(LeaseLostError):
        await auth.keys.set({"session": {"peer": b"x"}})
    assert auth.lost
    assert lost == ["s1"]
    assert not auth.pending  # dropped: they belong to a replaced owner
    assert any(
        r.levelname == "ERROR" and "dropping unsaved creds of s1" in r.getMessage()
        for r in caplog.records
    )
    await auth.aclose()  # nothing to save, nothing raised
    assert await pg.load_creds("s1") == {"counter": 100}


async def test_keep_alive_renews_and_reports_loss(pg: PostgresStore) -> None:
    a = await pg.acquire_lease("s1", owner="a", ttl=0.6)
    losses: list[BaseException] = []
    a.keep_alive(on_lost=lambda lease, reason: losses.append(reason))
    await asyncio.sleep(1.5)  # well past the ttl: kept alive
    with pytest.raises(LeaseUnavailableError):
        await pg.acquire_lease("s1", owner="b")
    await _expire(pg, "s1")
    await pg.acquire_lease("s1", owner="b")
    for _ in range(50):
        if losses:
            break
        await asyncio.sleep(0.05)
    assert len(losses) == 1
    assert isinstance(losses[0], LeaseLostError)
    assert a.lost


async def _none() -> list[Lease]:
    return []


async def test_claim_sessions_splits_without_overlap(pg: PostgresStore) -> None:
    for n in range(20):
        await pg.save_creds(f"bot-{n:02d}", {"n": n})
    one: set[str] = set()
    two: set[str] = set()
    first: list[Lease] = []
    for _ in range(5):  # workers claim in rounds; a round that races may leave some for later
        a, b = await asyncio.gather(
            pg.claim_sessions("w1", limit=12 - len(one), ttl=30) if len(one) < 12 else _none(),
            pg.claim_sessions("w2", limit=12, ttl=30),
        )
        first += a
        one |= {lease.session_id for lease in a}
        two |= {lease.session_id for lease in b}
        assert not one & two  # never one session to two workers
        if len(one | two) == 20:
            break
    assert len(one | two) == 20
    assert await pg.claim_sessions("w3", limit=5) == []
    # w1 dies: once its leases expire, w3 picks them up.
    for lease in first:
        await _expire(pg, lease.session_id)
    third = await pg.claim_sessions("w3", limit=50)
    assert {lease.session_id for lease in third} == one
    assert all(lease.token == 2 for lease in third)


async def test_claim_asks_again_for_sessions_a_racing_grant_took(
    pg: PostgresStore, pg_dsn: str
) -> None:
    """A claim whose snapshot predates another worker's grant is not left empty-handed.

    The race, made deterministic: another worker's grant of bot-00..04 is
    not committed yet when this claim starts, so they look free to it; its
    own grant waits on theirs, and when theirs commits they are refused.
    Sessions bot-05.. were free all along: the claim must come back with them.
    """
    import psycopg
    from psycopg import sql

    for n in range(10):
        await pg.save_creds(f"bot-{n:02d}", {"n": n})
    leases = pg.schema.names["leases"]
    async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
        await other.execute(
            sql.SQL(
                "INSERT INTO {} (session_id, owner, token, expires_at)"
                " SELECT 'bot-0' || n, 'other', 1, now() + interval '1 minute'"
                " FROM generate_series(0, 4) n"
            ).format(leases)
        )
        claim = asyncio.ensure_future(pg.claim_sessions("w1", limit=5, ttl=30))
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as probe:
            deadline = time.monotonic() + 30
            while True:  # until the claim's grant waits on the other worker's
                cur = await probe.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                    " WHERE NOT l.granted AND a.query LIKE %s",
                    ("%free AS%",),
                )
                row = await cur.fetchone()
                if row is not None and row[0] > 0:
                    break
                assert not claim.done(), "the claim did not wait on the other grant"
                assert time.monotonic() < deadline, "the claim never reached the other grant"
                await asyncio.sleep(0.01)
        await other.commit()
    granted = await claim
    assert sorted(lease.session_id for lease in granted) == [f"bot-0{n}" for n in range(5, 10)]
    assert all(lease.owner == "w1" for lease in granted)


async def test_session_worker_runs_renews_and_releases(pg: PostgresStore) -> None:
    for n in range(6):
        await pg.save_creds(f"bot-{n}", {"n": n})
    running: set[str] = set()

    async def handler(lease: Lease) -> None:
        auth = await use_auth_state(pg, lease.session_id, lease=lease, backup_interval=None)
        running.add(lease.session_id)
        try:
            await asyncio.Event().wait()
        finally:
            running.discard(lease.session_id)
            await auth.aclose()

    worker = SessionWorker(pg, "w1", handler, capacity=4, ttl=1.0, claim_every=0.1)
    task = asyncio.ensure_future(worker.run())
    for _ in range(100):
        if len(running) == 4:
            break
        await asyncio.sleep(0.02)
    assert len(running) == 4
    assert worker.sessions == sorted(running)
    await asyncio.sleep(1.5)  # past the ttl: renewed, still ours
    assert len(running) == 4
    await worker.stop()
    await task
    assert running == set()
    # Released: another worker gets everything at once.
    assert len(await pg.claim_sessions("w2", limit=10)) == 6


async def test_lease_arguments_are_checked(pg: PostgresStore) -> None:
    for kwargs, message in (
        ({"owner": ""}, "owner"),
        ({"owner": "a", "ttl": 0}, "ttl"),
        ({"owner": "a", "ttl": float("inf")}, "ttl"),
        ({"owner": "a", "wait": -1}, "wait"),
        ({"owner": "a\x00"}, "owner"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            await pg.acquire_lease("s1", **kwargs)
    with pytest.raises(InvalidInputError, match="limit"):
        await pg.claim_sessions("a", limit=0)


async def test_closing_after_a_loss_mid_save_drops_instead_of_raising(pg: PostgresStore) -> None:
    a = await pg.acquire_lease("s1", owner="a")
    auth = await use_auth_state(pg, "s1", lease=a, throttle=30.0, backup_interval=None)
    await auth.save_creds({"counter": 0})
    await _expire(pg, "s1")
    await pg.acquire_lease("s1", owner="b")
    auth.creds_updated({"counter": 1})  # urgent? no: the throttle holds it
    assert auth.pending
    await auth.aclose()  # the final save meets the new owner's token: dropped, not raised
    assert auth.lost
    assert await pg.load_creds("s1") == {"counter": 0}


# -- issue 13, class 9: a worker told to stop exits within a stated bound ------------


async def test_a_keep_alive_told_to_stop_stops_even_as_it_gets_a_connection(
    pg_dsn: str, pg_schema: str
) -> None:
    """The root cause of the flaky shutdown: psycopg-pool waits for a connection
    with asyncio.wait_for, which before Python 3.12 drops a cancellation that
    arrives together with the connection; the keep-alive then renewed forever
    and stop_keep_alive() (so SessionWorker.stop()) never returned."""
    async with PostgresStore(pg_dsn, schema=pg_schema, min_size=1, max_size=1) as store:
        await store.save_creds("s", {"n": 1})
        # The window is a loop iteration or two wide: try each offset.
        for offset in range(8):
            lease = await store.acquire_lease("s", owner="a", ttl=5.0)
            held = await store.pool.getconn()  # the only connection: the renewal waits
            lease.keep_alive(every=0.02)
            deadline = time.monotonic() + 10
            while not store.pool.get_stats().get("requests_waiting"):
                assert time.monotonic() < deadline, "the renewal never waited for the pool"
                await asyncio.sleep(0.002)
            await store.pool.putconn(held)  # handed to the waiting renewal ...
            for _ in range(offset):
                await asyncio.sleep(0)
            stopping = asyncio.ensure_future(lease.stop_keep_alive())  # ... as it is stopped
            # asyncio.wait, not wait_for: wait_for would cancel the stop on its
            # timeout, and that cancellation reaches the keeper and ends it.
            done, _ = await asyncio.wait({stopping}, timeout=3.0)
            assert done, f"stop_keep_alive() still waiting after 3 s (offset {offset})"
            renewed = lease.expires_at
            await asyncio.sleep(0.1)
            assert lease.expires_at == renewed, offset  # no renewal after the stop
            await lease.release()


async def test_stop_returns_within_its_bound_whatever_the_handlers_do(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SessionWorker, "STOP_TIMEOUT", 0.5)
    started = asyncio.Event()

    async def stubborn(lease: Lease) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # swallows the first cancellation, then takes its time

    async with PostgresStore(pg_dsn, schema=pg_schema) as store:
        await store.save_creds("s", {"n": 1})
        worker = SessionWorker(store, "w", stubborn, ttl=2.0, claim_every=0.05)
        running = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(started.wait(), 10)
        begun = time.monotonic()
        await worker.stop()
        took = time.monotonic() - begun
        await asyncio.wait_for(running, 5)
        assert took < SessionWorker.STOP_TIMEOUT + 1.0, took
        assert worker.sessions == []


async def test_racing_first_grants_give_one_owner_and_a_clear_refusal(pg: PostgresStore) -> None:
    # Two owners asking for a session that never had a lease, at the same
    # moment: the second's insert waits for the first's and conflicts, and its
    # statement's snapshot (taken before that commit) sees no holder to name.
    # It must ask again, not fail on the missing row.
    granted = refused = 0
    for n in range(40):
        sid = f"race-{n}"
        outcomes = await asyncio.gather(
            *(pg.acquire_lease(sid, owner=f"o{i}", ttl=30) for i in range(6)),
            return_exceptions=True,
        )
        assert all(isinstance(o, (Lease, LeaseUnavailableError)) for o in outcomes), outcomes
        leases = [o for o in outcomes if isinstance(o, Lease)]
        assert len(leases) == 1
        granted += len(leases)
        refused += sum(isinstance(o, LeaseUnavailableError) for o in outcomes)
        for o in outcomes:
            if isinstance(o, LeaseUnavailableError):
                assert o.holder == leases[0].owner
    assert (granted, refused) == (40, 200)
