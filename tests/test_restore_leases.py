"""restore_all(..., owner=...): every session restored under a lease, renewed by one renewer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from wa_session_store import (
    AuthState,
    InvalidInputError,
    InvalidTypeError,
    LeaseLostError,
    LeaseRenewer,
    LeaseUnavailableError,
    PostgresStore,
    RestoreResult,
    close_all,
    restore_all,
    sync,
)
from wa_session_store.store import maintenance
from wa_session_store.store.rows import RowCodec
from wa_session_store.sync import SyncAuthState, SyncStore, open_sync_store

from .conftest import DSN
from .proxy import Proxy
from .test_auth_state import _corrupt
from .test_bulk_restore import _seed, counted, settled
from .test_leases import _expire

pytestmark = pytest.mark.postgres

CREDS: dict[str, Any] = {"registrationId": 7, "noiseKey": {"public": b"\x05" * 32}}


@pytest.fixture
async def pg(pg_schema: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(DSN, schema=pg_schema, max_size=4) as store:
        yield store


async def _restored(store: PostgresStore, owner: str, **options: Any) -> RestoreResult:
    options.setdefault("backup_interval", None)
    return await restore_all(store, owner=owner, **options)


async def test_every_session_is_leased_in_two_statements_a_page_and_renewed_in_one(
    pg_schema: str, proxy: Proxy
) -> None:
    async with PostgresStore(DSN, schema=pg_schema) as seeder:
        ids = await _seed(seeder, 25)
    async with PostgresStore(proxy.dsn(DSN), schema=pg_schema, min_size=2, max_size=4) as store:
        store.CREDS_PAGE_SIZE = 10  # type: ignore[misc]  # pages of 10, 10 and 5
        sent, result = await counted(proxy, store, lambda: _restored(store, "w1", ttl=1.5))
        assert sent == 6  # per page: one grant, one read of the creds granted
        assert sorted(result.states) == ids
        assert not result.failed
        assert not result.held
        assert result.states["bot-0024"].creds == {**CREDS, "registrationId": 24}

        leases = {info.session_id: info for info in await store.list_leases()}
        assert sorted(leases) == ids
        for sid, state in result.states.items():
            assert state.lease is not None
            assert (state.lease.owner, state.lease.token) == ("w1", leases[sid].token)
            assert not leases[sid].expired
        renewer = result.renewer
        assert isinstance(renewer, LeaseRenewer)
        assert renewer.every == 0.5  # ttl / 3
        assert len(renewer) == 25

        await settled(store)
        expiries = {sid: state.lease.expires_at for sid, state in result.states.items()}  # type: ignore[union-attr]
        before = proxy.round_trips
        await asyncio.sleep(1.3)  # two periods
        renewals = proxy.round_trips - before
        assert 1 <= renewals <= 3  # one statement a period for all 25 leases
        for sid, state in result.states.items():
            assert state.lease is not None
            assert not state.lost
            assert state.lease.expires_at > expiries[sid]

        sent, failed = await counted(proxy, store, lambda: close_all(result.states.values()))
        assert failed == {}
        assert sent == 1  # nothing pending to save; every lease released in one statement
        assert all(info.expired for info in await store.list_leases())
        assert len(renewer) == 0
        await asyncio.sleep(0.6)
        assert renewer._task is None  # nothing left to renew: its task ended


async def test_the_next_page_is_granted_and_read_while_one_decodes(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await _seed(pg, 25)
    pg.CREDS_PAGE_SIZE = 10  # type: ignore[misc]  # pages of 10, 10 and 5
    events: list[str] = []
    lease_page, decode = pg._lease_page, RowCodec.decode_creds

    async def leasing(owner: str, after: str | None, size: int, ttl: float) -> Any:
        events.append(f"fetch after {after}")
        found = await lease_page(owner, after, size, ttl)
        events.append(f"fetched after {after}")
        return found

    def decoding(self: RowCodec, page: Any, rows: list[Any]) -> None:
        if rows:
            events.append(f"decode {rows[0][0]}")
        decode(self, page, rows)

    monkeypatch.setattr(pg, "_lease_page", leasing)
    monkeypatch.setattr(RowCodec, "decode_creds", decoding)
    monkeypatch.setattr(maintenance, "DECODE_SLICE", 4)  # a page decodes in 3 slices
    result = await _restored(pg, "w1")
    assert sorted(result.states) == ids
    # The second page was being granted and read while the first one decoded
    # (between its slices), the third while the second one did.
    assert events.index("fetch after bot-0009") < events.index("decode bot-0008")
    assert events.index("fetch after bot-0019") < events.index("decode bot-0018")
    await close_all(result.states.values())


async def test_sessions_held_by_another_live_owner_are_reported_not_opened(
    pg: PostgresStore,
) -> None:
    ids = await _seed(pg, 6)
    other = [await pg.acquire_lease(sid, owner="w2", ttl=30) for sid in ("bot-0001", "bot-0003")]
    stale = await pg.acquire_lease("bot-0004", owner="w2", ttl=30)
    await _expire(pg, "bot-0004")  # w2 stopped renewing: free to take
    result = await _restored(pg, "w1")
    assert sorted(result.states) == [sid for sid in ids if sid not in ("bot-0001", "bot-0003")]
    assert sorted(result.held) == ["bot-0001", "bot-0003"]
    for sid, error in result.held.items():
        assert isinstance(error, LeaseUnavailableError)
        assert (error.session_id, error.holder) == (sid, "w2")
    assert not any(isinstance(s, AuthState) and s.session_id in result.held for s in _open())
    restored = result.states["bot-0004"].lease
    assert restored is not None
    assert restored.token > stale.token
    assert (await pg.lease_holder("bot-0001"))[0] == "w2"  # type: ignore[index]
    await close_all(result.states.values())
    assert (await pg.lease_holder("bot-0001"))[0] == "w2"  # type: ignore[index]  # not ours
    for lease in other:
        assert not lease.lost
        await lease.release()


def _open() -> list[object]:
    from wa_session_store.auth.auth_state import _open_states

    return list(_open_states)


async def test_writes_are_fenced_and_a_lost_lease_calls_on_lost(pg: PostgresStore) -> None:
    await _seed(pg, 4)
    await pg.set_keys("bot-0001", {"session": {"peer.0": {"record": b"\x01"}}})
    lost: list[AuthState] = []
    noticed = asyncio.Event()

    def on_lost(auth: AuthState) -> None:
        lost.append(auth)
        noticed.set()

    result = await _restored(
        pg, "w1", ttl=1.5, on_lost=on_lost, preload=True, concurrency=2, key_writes="barrier"
    )
    assert len(result.states) == 4
    assert result.renewer is not None
    assert len(result.renewer) == 4
    victim, renewed = result.states["bot-0001"], result.states["bot-0002"]
    assert await victim.keys.get("session", ["peer.0"]) == {"peer.0": {"record": b"\x01"}}

    await _expire(pg, "bot-0001")
    thief = await pg.acquire_lease("bot-0001", owner="w2", ttl=30)
    with pytest.raises(LeaseLostError, match="'w2'"):
        await victim.save_creds({**CREDS, "registrationId": 100})
    assert victim.lost
    assert lost == [victim]
    with pytest.raises(LeaseLostError):  # refused at once, nothing buffered
        await victim.keys.set({"session": {"peer.0": {"record": b"\x02"}}})
    assert await pg.load_creds("bot-0001") == {**CREDS, "registrationId": 1}
    assert await pg.get_keys("bot-0001", "session", ["peer.0"]) == {"peer.0": {"record": b"\x01"}}
    assert victim.lease not in result.renewer.leases

    # The renewer finds a lease taken without a write, and calls on_lost too.
    noticed.clear()
    await _expire(pg, "bot-0003")
    await pg.acquire_lease("bot-0003", owner="w2", ttl=30)
    await asyncio.wait_for(noticed.wait(), 5)
    assert lost == [victim, result.states["bot-0003"]]
    assert result.states["bot-0003"].lost

    await renewed.save_creds({**CREDS, "registrationId": 200})  # the others still own theirs
    assert await pg.load_creds("bot-0002") == {**CREDS, "registrationId": 200}
    assert await close_all(result.states.values()) == {}
    holders = {info.session_id: info for info in await pg.list_leases()}
    assert holders["bot-0001"].owner == "w2"
    assert not holders["bot-0001"].expired
    assert holders["bot-0002"].expired  # released at close
    await thief.release()


async def test_closing_one_state_releases_its_lease_and_a_bad_document_is_released(
    pg: PostgresStore,
) -> None:
    await _seed(pg, 3)
    await _corrupt(pg, "bot-0002")
    result = await _restored(pg, "w1")
    assert sorted(result.states) == ["bot-0000", "bot-0001"]
    assert list(result.failed) == ["bot-0002"]
    held = {info.session_id: info for info in await pg.list_leases()}
    assert held["bot-0002"].expired  # granted with its page, released: not restored
    assert not held["bot-0000"].expired
    await result.states["bot-0000"].aclose()
    assert result.renewer is not None
    assert len(result.renewer) == 1
    taken = await pg.acquire_lease("bot-0000", owner="w2")  # free at once, not after the ttl
    await taken.release()
    await result.states["bot-0001"].aclose()
    assert len(result.renewer) == 0


async def test_the_same_owner_restoring_again_takes_over_with_newer_tokens(
    pg: PostgresStore,
) -> None:
    await _seed(pg, 2)
    first = await _restored(pg, "w1")
    second = await _restored(pg, "w1")
    assert sorted(second.states) == sorted(first.states)
    assert not second.held
    for sid, state in second.states.items():
        assert state.lease.token > first.states[sid].lease.token  # type: ignore[union-attr]
    with pytest.raises(LeaseLostError):
        await first.states["bot-0000"].save_creds(CREDS)
    await close_all([*first.states.values(), *second.states.values()])


async def test_restore_arguments_are_checked(pg: PostgresStore, tmp_path: Path) -> None:
    for bad in ("", "x" * 256, 42):
        with pytest.raises(InvalidInputError, match="owner"):
            await restore_all(pg, owner=bad)  # type: ignore[arg-type]
    for ttl in (0, -1, float("nan"), True, 86_401):
        with pytest.raises(InvalidInputError, match="ttl"):
            await restore_all(pg, owner="w1", ttl=ttl)
    lease = await pg.acquire_lease("s1", owner="w1")
    with pytest.raises(InvalidInputError, match="owner="):
        await restore_all(pg, lease=lease)
    await lease.release()
    assert not _open()


@pytest.fixture(params=["memory", "sqlite"])
def leaseless_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 's.db'}"


def test_stores_without_leases_refuse_an_owner_as_acquire_lease_does(leaseless_url: str) -> None:
    with open_sync_store(leaseless_url) as store:
        store.save_creds("s1", dict(CREDS))
        with pytest.raises(InvalidTypeError, match="has no leases") as acquire:
            store.acquire_lease("s1", owner="w1")
        with pytest.raises(InvalidTypeError) as refused:
            sync.restore_all_sync(store, owner="w1")
        assert str(refused.value) == str(acquire.value)
        with pytest.raises(InvalidTypeError) as refused:
            asyncio.run(restore_all(store.store, owner="w1"))  # refused before any I/O
        assert str(refused.value) == str(acquire.value)
        assert sync.restore_all_sync(store).states.keys() == {"s1"}  # without an owner: as ever


@pytest.fixture
def pg_sync(pg_schema: str) -> Iterator[SyncStore]:
    with SyncStore(PostgresStore(DSN, schema=pg_schema)) as store:
        yield store


def test_restore_all_sync_takes_an_owner(pg_sync: SyncStore) -> None:
    store = pg_sync
    for n in range(3):
        store.save_creds(f"s{n}", dict(CREDS))
    other = store.acquire_lease("s1", owner="w2", ttl=30)
    restored = sync.restore_all_sync(store, owner="w1", ttl=3.0, backup_interval=None)
    assert sorted(restored.states) == ["s0", "s2"]
    assert list(restored.held) == ["s1"]
    assert restored.held["s1"].holder == "w2"
    auth = restored.states["s2"]
    assert isinstance(auth, SyncAuthState)
    lease = auth.state.lease
    assert lease is not None
    assert lease.owner == "w1"
    auth.save_creds({**CREDS, "registrationId": 9})  # fenced by w1's lease
    with pytest.raises(InvalidInputError, match="ttl"):
        sync.restore_all_sync(store, owner="w1", ttl=0)
    page = store.lease_creds_page("w3", limit=10)
    assert sorted(page.held) == ["s0", "s1", "s2"]
    assert not page.leases
    store.close()  # closes the auth states and releases their leases in one statement
    store.open()
    assert store.load_creds("s2") == {**CREDS, "registrationId": 9}
    holders = {info.session_id: info for info in store.list_leases()}
    assert holders["s0"].expired
    assert holders["s2"].expired
    assert not holders["s1"].expired
    store.release_lease(other)
