"""The contract on sessions and the store's life: ids kept literally, listing and
deleting, data that outlives the store object, a closed store that refuses
calls, and several stores writing to one database at once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from ..errors import StoreClosedError
from ..store.base import AuthStateStore, BaseStore
from .base import CREDS, HOSTILE_IDS, ContractBase, StoreFactory

__all__ = ["SessionsContract"]


class SessionsContract(ContractBase):
    """Sessions: the protocol, hostile ids, listing, deleting, reopening, closing, sharing."""

    async def test_is_an_auth_state_store(self, store: BaseStore) -> None:
        assert isinstance(store, AuthStateStore)

    @pytest.mark.parametrize("hostile", HOSTILE_IDS)
    async def test_hostile_ids_are_stored_literally(self, store: BaseStore, hostile: str) -> None:
        await store.save_creds(hostile, {"id": hostile})
        await store.set_keys(hostile, {"pre-key": {hostile: hostile}, "sess'ion": {"1": hostile}})
        assert await store.load_creds(hostile) == {"id": hostile}
        assert await store.get_keys(hostile, "pre-key", [hostile]) == {hostile: hostile}
        assert await store.get_keys(hostile, "sess'ion", ["1"]) == {"1": hostile}
        assert [s.session_id for s in await store.list_sessions()] == [hostile]
        assert await store.delete_session(hostile) is True
        assert await store.list_sessions() == []

    async def test_list_sessions(self, store: BaseStore) -> None:
        before = datetime.now(timezone.utc)
        await store.save_creds("b", CREDS)
        await store.set_keys("b", {"pre-key": {"1": "x", "2": "y"}})
        await store.set_keys("a", {"session": {"1": "z"}})
        sessions = await store.list_sessions()
        assert [(s.session_id, s.key_count, s.has_creds) for s in sessions] == [
            ("a", 1, False),
            ("b", 2, True),
        ]
        for info in sessions:
            assert info.updated_at.tzinfo is not None
            assert info.updated_at >= before.replace(microsecond=0)
            assert info.size > 0

    async def test_delete_session_removes_creds_and_keys(self, store: BaseStore) -> None:
        await store.save_creds("s1", CREDS)
        await store.set_keys("s1", {"pre-key": {"1": "x"}})
        await store.save_creds("s2", CREDS)
        assert await store.delete_session("s1") is True
        assert await store.delete_session("s1") is False
        assert await store.load_creds("s1") is None
        assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": None}
        assert [s.session_id for s in await store.list_sessions()] == ["s2"]

    async def test_persists_across_close_and_reopen(self, make_store: StoreFactory) -> None:
        async with make_store() as first:
            await first.save_creds("s1", CREDS)
            await first.set_keys("s1", {"pre-key": {"1": b"key"}})
        async with make_store() as second:
            assert await second.load_creds("s1") == CREDS
            assert await second.get_keys("s1", "pre-key", ["1"]) == {"1": b"key"}

    async def test_closed_store_refuses_calls(self, make_store: StoreFactory) -> None:
        store = make_store()
        with pytest.raises(StoreClosedError, match="not open"):
            await store.load_creds("s1")
        async with store:
            pass
        with pytest.raises(StoreClosedError):
            await store.save_creds("s1", CREDS)

    async def test_concurrent_writers_on_one_database(self, make_store: StoreFactory) -> None:
        stores = [make_store() for _ in range(4)]
        for s in stores:
            await s.open()
        try:

            async def writer(n: int, s: BaseStore) -> None:
                for i in range(25):
                    await s.set_keys("shared", {"pre-key": {f"{n}-{i}": {"n": n, "i": i}}})
                    await s.save_creds(f"s{n}", {"n": n, "i": i})

            await asyncio.gather(*(writer(n, s) for n, s in enumerate(stores)))
            ids = [f"{n}-{i}" for n in range(4) for i in range(25)]
            got = await stores[0].get_keys("shared", "pre-key", ids)
            assert all(got[f"{n}-{i}"] == {"n": n, "i": i} for n in range(4) for i in range(25))
            for n in range(4):
                assert await stores[0].load_creds(f"s{n}") == {"n": n, "i": 24}
        finally:
            for s in stores:
                await s.close()
