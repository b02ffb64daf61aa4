"""The contract on Signal keys: every id asked for is answered, a batch is
all-or-nothing (bad input writes nothing, a reader never sees part of one), and
values of any size up to the store's limit round-trip."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ..errors import InvalidInputError, InvalidTypeError
from ..store.base import BaseStore
from .base import CREDS, ContractBase, StoreFactory

__all__ = ["KeysContract"]


class KeysContract(ContractBase):
    """Keys: reads, batched writes and deletes, whole batches, value sizes."""

    async def test_get_keys_returns_every_id_asked_for(self, store: BaseStore) -> None:
        await store.set_keys(
            "s1", {"pre-key": {"1": {"private": b"a", "public": b"b"}, 2: {"x": 1}}}
        )
        got = await store.get_keys("s1", "pre-key", ["1", 2, "3"])
        assert got == {"1": {"private": b"a", "public": b"b"}, "2": {"x": 1}, "3": None}
        assert list(got) == ["1", "2", "3"]
        assert await store.get_keys("s1", "session", ["1"]) == {"1": None}
        assert await store.get_keys("other", "pre-key", ["1"]) == {"1": None}
        assert await store.get_keys("s1", "pre-key", []) == {}

    async def test_set_keys_upserts_and_deletes_across_categories(self, store: BaseStore) -> None:
        await store.set_keys(
            "s1",
            {
                "pre-key": {
                    str(i): {"private": bytes([i]) * 32, "public": bytes([i]) * 32}
                    for i in range(1, 6)
                },
                "session": {"15551234567.0": b"\x00ratchet"},
            },
        )
        await store.set_keys(
            "s1",
            {
                "pre-key": {"1": None, "2": None, "3": {"replaced": True}},
                "session": {"15551234567.0": b"\x01ratchet"},
                "sender-key": {"group@g.us::15551234567::0": b"sk"},
            },
        )
        assert await store.get_keys("s1", "pre-key", ["1", "2", "3", "4"]) == {
            "1": None,
            "2": None,
            "3": {"replaced": True},
            "4": {"private": b"\x04" * 32, "public": b"\x04" * 32},
        }
        assert await store.get_keys("s1", "session", ["15551234567.0"]) == {
            "15551234567.0": b"\x01ratchet"
        }
        assert await store.get_keys("s1", "sender-key", ["group@g.us::15551234567::0"]) == {
            "group@g.us::15551234567::0": b"sk"
        }

    async def test_deleting_missing_keys_is_fine(self, store: BaseStore) -> None:
        await store.set_keys("s1", {"pre-key": {"404": None}})
        assert await store.get_keys("s1", "pre-key", ["404"]) == {"404": None}

    async def test_batch_with_one_bad_value_writes_nothing(self, store: BaseStore) -> None:
        await store.set_keys("s1", {"pre-key": {"1": "old"}})
        batch: dict[str, dict[Any, Any]] = {
            "pre-key": {"1": "new", "2": "fine"},
            "session": {"a": {1, 2}},  # a set: JSON cannot hold it
        }
        with pytest.raises(InvalidTypeError):
            await store.set_keys("s1", batch)
        assert await store.get_keys("s1", "pre-key", ["1", "2"]) == {"1": "old", "2": None}

    async def test_batch_with_bad_id_or_category_writes_nothing(self, store: BaseStore) -> None:
        for bad in (
            {"pre-key": {"1": "x", "": "y"}},
            {"pre-key": {"1": "x"}, "": {"2": "y"}},
            {"pre-key": {"1": "x", "bad\x00": "y"}},
            {"pre-key": {"1": float("nan")}},
        ):
            with pytest.raises(InvalidInputError):
                await store.set_keys("s1", bad)
        assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": None}
        assert await store.list_sessions() == []

    async def test_many_keys_in_one_batch(self, store: BaseStore) -> None:
        keys = {
            str(i): {"keyPair": {"private": bytes([i % 256]) * 32, "public": b"p" * 33}}
            for i in range(1, 813)
        }
        await store.set_keys("s1", {"pre-key": keys})
        got = await store.get_keys("s1", "pre-key", list(keys))
        assert got == keys
        sessions = await store.list_sessions()
        assert sessions[0].key_count == 812

    async def test_a_batch_is_seen_whole_or_not_at_all(self, make_store: StoreFactory) -> None:
        """``set_keys`` writes its batch in one transaction: a reader on another
        connection sees all of a batch or none of it, never a part."""
        ids = [str(i) for i in range(100)]
        batches = 15
        async with make_store() as writer, make_store() as reader:
            await writer.set_keys("s1", {"pre-key": dict.fromkeys(ids, 0)})
            written = asyncio.Event()

            async def write() -> None:
                for generation in range(1, batches + 1):
                    await writer.set_keys("s1", {"pre-key": dict.fromkeys(ids, generation)})
                written.set()

            async def read() -> list[set[Any]]:
                seen = []
                while not written.is_set():
                    got = await reader.get_keys("s1", "pre-key", ids)
                    seen.append(set(got.values()))
                    await asyncio.sleep(0)
                return seen

            _, seen = await asyncio.gather(write(), read())
            torn = [generations for generations in seen if len(generations) != 1]
            assert not torn, f"a reader saw parts of several batches at once: {torn[:3]}"
            final = await reader.get_keys("s1", "pre-key", ids)
            assert set(final.values()) == {batches}

    async def test_clear_keys_keeps_creds(self, store: BaseStore) -> None:
        await store.save_creds("s1", CREDS)
        await store.set_keys("s1", {"pre-key": {"1": "x", "2": "y"}, "session": {"a": "b"}})
        assert await store.clear_keys("s1") == 3
        assert await store.load_creds("s1") == CREDS
        assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": None}

    async def test_large_value_round_trips(self, store: BaseStore) -> None:
        blob = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB, e.g. app-state
        await store.set_keys("s1", {"app-state-sync-version": {"regular": {"hash": blob}}})
        got = await store.get_keys("s1", "app-state-sync-version", ["regular"])
        assert got["regular"]["hash"] == blob

    async def test_value_over_the_limit_is_refused(self, make_store: StoreFactory) -> None:
        async with make_store(max_value_size=1024) as store:
            with pytest.raises(InvalidInputError, match="limit is 1,024"):
                await store.set_keys("s1", {"pre-key": {"1": "x" * 2000}})
            with pytest.raises(InvalidInputError, match="limit"):
                await store.save_creds("s1", {"big": "x" * 2000})
            assert await store.list_sessions() == []
