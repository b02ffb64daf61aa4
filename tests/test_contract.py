"""The AuthStateStore contract, run against every backend."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import pytest

from wa_session_store import (
    AuthStateStore,
    InvalidInputError,
    InvalidTypeError,
    StoreClosedError,
)
from wa_session_store.store import BaseStore

from .conftest import StoreFactory

CREDS: dict[str, Any] = {
    "noiseKey": {"private": b"\x01" * 32, "public": b"\x02" * 32},
    "signedIdentityKey": {"private": bytes(range(32)), "public": bytes(range(32, 64))},
    "signedPreKey": {
        "keyPair": {"private": b"\x03" * 32, "public": b"\x04" * 32},
        "signature": b"\x05" * 64,
        "keyId": 1,
    },
    "registrationId": 4242,
    "advSecretKey": "c2VjcmV0",
    "nextPreKeyId": 813,
    "firstUnuploadedPreKeyId": 813,
    "me": {"id": "15551234567:1@s.whatsapp.net", "name": "Bot ✓"},
    "accountSyncCounter": 0,
    "registered": True,
    "platform": None,
    "processedHistoryMessages": [],
}

HOSTILE_IDS = [
    "'; DROP TABLE wa_keys; --",
    'quote"double',
    "percent %s %(x)s {}",
    "emoji 🔑 ünïcödé 中文",
    "sender::key/with:colons",
    "a" * 255,
    " leading and trailing ",
    "back\\slash",
]


async def test_is_an_auth_state_store(store: BaseStore) -> None:
    assert isinstance(store, AuthStateStore)


async def test_creds_round_trip(store: BaseStore) -> None:
    assert await store.load_creds("s1") is None
    await store.save_creds("s1", CREDS)
    assert await store.load_creds("s1") == CREDS
    changed = {**CREDS, "nextPreKeyId": 900}
    await store.save_creds("s1", changed)
    assert await store.load_creds("s1") == changed


async def test_loaded_creds_are_a_fresh_copy(store: BaseStore) -> None:
    await store.save_creds("s1", CREDS)
    first = await store.load_creds("s1")
    assert first is not None
    first["registrationId"] = 1
    assert (await store.load_creds("s1")) == CREDS


async def test_get_keys_returns_every_id_asked_for(store: BaseStore) -> None:
    await store.set_keys("s1", {"pre-key": {"1": {"private": b"a", "public": b"b"}, 2: {"x": 1}}})
    got = await store.get_keys("s1", "pre-key", ["1", 2, "3"])
    assert got == {"1": {"private": b"a", "public": b"b"}, "2": {"x": 1}, "3": None}
    assert list(got) == ["1", "2", "3"]
    assert await store.get_keys("s1", "session", ["1"]) == {"1": None}
    assert await store.get_keys("other", "pre-key", ["1"]) == {"1": None}
    assert await store.get_keys("s1", "pre-key", []) == {}


async def test_set_keys_upserts_and_deletes_across_categories(store: BaseStore) -> None:
    await store.set_keys(
        "s1",
        {
            "pre-key": {
                str(i): {"private": bytes([i]) * 32, "public": bytes([i]) * 32} for i in range(1, 6)
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


async def test_deleting_missing_keys_is_fine(store: BaseStore) -> None:
    await store.set_keys("s1", {"pre-key": {"404": None}})
    assert await store.get_keys("s1", "pre-key", ["404"]) == {"404": None}


async def test_batch_with_one_bad_value_writes_nothing(store: BaseStore) -> None:
    await store.set_keys("s1", {"pre-key": {"1": "old"}})
    batch: dict[str, dict[Any, Any]] = {
        "pre-key": {"1": "new", "2": "fine"},
        "session": {"a": {1, 2}},  # a set: JSON cannot hold it
    }
    with pytest.raises(InvalidTypeError):
        await store.set_keys("s1", batch)
    assert await store.get_keys("s1", "pre-key", ["1", "2"]) == {"1": "old", "2": None}


async def test_batch_with_bad_id_or_category_writes_nothing(store: BaseStore) -> None:
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


@pytest.mark.parametrize("hostile", HOSTILE_IDS)
async def test_hostile_ids_are_stored_literally(store: BaseStore, hostile: str) -> None:
    await store.save_creds(hostile, {"id": hostile})
    await store.set_keys(hostile, {"pre-key": {hostile: hostile}, "sess'ion": {"1": hostile}})
    assert await store.load_creds(hostile) == {"id": hostile}
    assert await store.get_keys(hostile, "pre-key", [hostile]) == {hostile: hostile}
    assert await store.get_keys(hostile, "sess'ion", ["1"]) == {"1": hostile}
    assert [s.session_id for s in await store.list_sessions()] == [hostile]
    assert await store.delete_session(hostile) is True
    assert await store.list_sessions() == []


async def test_list_sessions(store: BaseStore) -> None:
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


async def test_delete_session_removes_creds_and_keys(store: BaseStore) -> None:
    await store.save_creds("s1", CREDS)
    await store.set_keys("s1", {"pre-key": {"1": "x"}})
    await store.save_creds("s2", CREDS)
    assert await store.delete_session("s1") is True
    assert await store.delete_session("s1") is False
    assert await store.load_creds("s1") is None
    assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": None}
    assert [s.session_id for s in await store.list_sessions()] == ["s2"]


async def test_clear_keys_keeps_creds(store: BaseStore) -> None:
    await store.save_creds("s1", CREDS)
    await store.set_keys("s1", {"pre-key": {"1": "x", "2": "y"}, "session": {"a": "b"}})
    assert await store.clear_keys("s1") == 3
    assert await store.load_creds("s1") == CREDS
    assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": None}


async def test_persists_across_close_and_reopen(make_store: StoreFactory) -> None:
    async with make_store() as first:
        await first.save_creds("s1", CREDS)
        await first.set_keys("s1", {"pre-key": {"1": b"key"}})
    async with make_store() as second:
        assert await second.load_creds("s1") == CREDS
        assert await second.get_keys("s1", "pre-key", ["1"]) == {"1": b"key"}


async def test_closed_store_refuses_calls(make_store: StoreFactory) -> None:
    store = make_store()
    with pytest.raises(StoreClosedError, match="not open"):
        await store.load_creds("s1")
    async with store:
        pass
    with pytest.raises(StoreClosedError):
        await store.save_creds("s1", CREDS)


async def test_concurrent_writers_on_one_database(make_store: StoreFactory) -> None:
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


async def test_large_value_round_trips(store: BaseStore) -> None:
    blob = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB, e.g. app-state
    await store.set_keys("s1", {"app-state-sync-version": {"regular": {"hash": blob}}})
    got = await store.get_keys("s1", "app-state-sync-version", ["regular"])
    assert got["regular"]["hash"] == blob


async def test_value_over_the_limit_is_refused(make_store: StoreFactory) -> None:
    async with make_store(max_value_size=1024) as store:
        with pytest.raises(InvalidInputError, match="limit is 1,024"):
            await store.set_keys("s1", {"pre-key": {"1": "x" * 2000}})
        with pytest.raises(InvalidInputError, match="limit"):
            await store.save_creds("s1", {"big": "x" * 2000})
        assert await store.list_sessions() == []


async def test_many_keys_in_one_batch(store: BaseStore) -> None:
    keys = {
        str(i): {"keyPair": {"private": bytes([i % 256]) * 32, "public": b"p" * 33}}
        for i in range(1, 813)
    }
    await store.set_keys("s1", {"pre-key": keys})
    got = await store.get_keys("s1", "pre-key", list(keys))
    assert got == keys
    sessions = await store.list_sessions()
    assert sessions[0].key_count == 812


async def test_import_and_export_a_whole_session(store: BaseStore) -> None:
    keys = {
        "pre-key": {str(i): {"public": bytes([i]) * 33} for i in range(1, 30)},
        "sender-key": {"group@g.us::15551234567::0": b"sk"},
        "app-state-sync-key": {"AAAAAJ/b": {"keyData": b"k"}},
    }
    await store.import_session("s1", CREDS, keys)
    exported = await store.export_session("s1")
    assert exported is not None
    assert exported.creds == CREDS
    assert exported.keys == keys
    assert "keyData" not in repr(exported)
    assert await store.export_session("missing") is None


async def test_import_refuses_to_overwrite_unless_told(store: BaseStore) -> None:
    from wa_session_store import SessionExistsError

    await store.set_keys("s1", {"session": {"old": b"1"}})
    with pytest.raises(SessionExistsError, match="overwrite=True"):
        await store.import_session("s1", CREDS, {"pre-key": {"1": b"new"}})
    assert await store.get_keys("s1", "session", ["old"]) == {"old": b"1"}
    assert await store.load_creds("s1") is None
    await store.import_session("s1", CREDS, {"pre-key": {"1": b"new"}}, overwrite=True)
    assert await store.get_keys("s1", "session", ["old"]) == {"old": None}
    assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": b"new"}
    assert await store.load_creds("s1") == CREDS


async def test_import_with_a_bad_value_writes_nothing(store: BaseStore) -> None:
    with pytest.raises(InvalidInputError):
        await store.import_session("s1", CREDS, {"pre-key": {"1": b"ok", "2": float("inf")}})
    assert await store.list_sessions() == []


async def test_import_of_keys_only(store: BaseStore) -> None:
    await store.import_session("s1", None, {"pre-key": {"1": b"k"}})
    exported = await store.export_session("s1")
    assert exported is not None
    assert exported.creds is None
    assert exported.keys == {"pre-key": {"1": b"k"}}


async def test_a_retried_import_whose_first_commit_landed_succeeds(store: BaseStore) -> None:
    """What a retry after a lost answer does: the same call, the same version, again."""
    version = store._clock.next()
    blob = b'{"registrationId":1}'
    rows = [("pre-key", "1", b'"k"')]
    assert await store._replace_session("s1", blob, version, rows, False, 5.0)
    assert await store._replace_session("s1", blob, version, rows, False, 5.0)
    assert not await store._replace_session("s1", blob, store._clock.next(), rows, False, 5.0)
