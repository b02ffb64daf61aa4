"""The store contract as a pytest kit: run every test of it against any backend.

The contract is what every :class:`~wa_session_store.AuthStateStore` of this
project keeps, written once as one test class, :class:`StoreContract` (the
pattern of the ``limits`` library, where one test class runs against every
storage). The project's own backends (memory, SQLite, PostgreSQL, PostgreSQL
behind PgBouncer) run through this class, so what a third-party backend is
checked against cannot drift from what the project checks itself.

Subclass it in a test module and give it a ``make_store`` fixture: a
factory of stores of your backend that all use **one database** (the same
file, schema or server), passing its keyword arguments (the options of
:class:`~wa_session_store.store.base.BaseStore`, such as ``max_value_size``) to
the store's constructor. The kit opens and closes the stores itself::

    import pytest
    from wa_session_store.testing import StoreContract

    from my_package import MyStore


    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda **options: MyStore(tmp_path / "sessions.db", **options)

Each test starts from an empty database: the fixture must give each test a
fresh one (``tmp_path``, a new schema). ``make_store`` may also be a fixture
of a ``conftest.py`` (a ``make_store`` defined in the class wins); parametrize
it to run the contract on several configurations. The kit's ``store`` fixture
is ``make_store()``, opened for the test and closed after it.

The tests are coroutines marked ``asyncio``: they run under pytest-asyncio in
its strict or auto mode, on a loop per test. Some reach below the public
methods, into the primitives of :class:`~wa_session_store.store.base.BaseStore`
(``_write_creds``, ``_replace_session``) and its version clock, because the
rules they check (a late write never replaces a newer one) cannot be seen
from above: the kit is for stores built on ``BaseStore`` (see the guide,
"Writing a backend").

Importing this module imports pytest and pytest-asyncio (``pip install
'wa-session-store[testing]'``); importing :mod:`wa_session_store` does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import pytest_asyncio

from .errors import (
    InvalidInputError,
    InvalidTypeError,
    LeaseLostError,
    SessionExistsError,
    StoreClosedError,
)
from .store.base import AuthStateStore, BaseStore
from .store.codec import KeyRow

__all__ = ["CREDS", "HOSTILE_IDS", "StoreContract", "StoreFactory"]

#: What a ``make_store`` fixture returns: ``make_store(**options)`` builds a
#: store (not yet opened) on the test's one database.
StoreFactory = Callable[..., BaseStore]

#: A creds document as a Baileys-style client writes it: nested objects,
#: bytes, non-ASCII text, ``None`` and an empty list.
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

#: Session ids, key ids and categories that a store must keep literally
#: (quotes, SQL, format strings, separators, non-ASCII, 255 characters).
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

# The timeout the primitive-level tests give each attempt, in seconds.
_TIMEOUT = 5.0


class _Fence:
    """A lease's session and token, for a store that has no leases."""

    def __init__(self, session_id: str, token: int) -> None:
        self.session_id = session_id
        self.token = token


class StoreContract:
    """The contract of a store, one test per rule; subclass it as ``Test...``.

    Needs a ``make_store`` fixture (see the module's documentation): a
    factory of unopened stores of one database, which accepts the keyword
    arguments of :class:`~wa_session_store.store.base.BaseStore`. Without it,
    pytest reports ``fixture 'make_store' not found`` for every test.
    """

    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def store(self, make_store: StoreFactory) -> AsyncIterator[BaseStore]:
        """``make_store()``, open for the test, closed after it."""
        async with make_store() as opened:
            yield opened

    async def test_is_an_auth_state_store(self, store: BaseStore) -> None:
        assert isinstance(store, AuthStateStore)

    async def test_creds_round_trip(self, store: BaseStore) -> None:
        assert await store.load_creds("s1") is None
        await store.save_creds("s1", CREDS)
        assert await store.load_creds("s1") == CREDS
        changed = {**CREDS, "nextPreKeyId": 900}
        await store.save_creds("s1", changed)
        assert await store.load_creds("s1") == changed

    async def test_loaded_creds_are_a_fresh_copy(self, store: BaseStore) -> None:
        await store.save_creds("s1", CREDS)
        first = await store.load_creds("s1")
        assert first is not None
        first["registrationId"] = 1
        assert (await store.load_creds("s1")) == CREDS

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

    async def test_clear_keys_keeps_creds(self, store: BaseStore) -> None:
        await store.save_creds("s1", CREDS)
        await store.set_keys("s1", {"pre-key": {"1": "x", "2": "y"}, "session": {"a": "b"}})
        assert await store.clear_keys("s1") == 3
        assert await store.load_creds("s1") == CREDS
        assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": None}

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

    async def test_import_and_export_a_whole_session(self, store: BaseStore) -> None:
        keys: dict[str, dict[str, Any]] = {
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

    async def test_import_refuses_to_overwrite_unless_told(self, store: BaseStore) -> None:
        await store.set_keys("s1", {"session": {"old": b"1"}})
        with pytest.raises(SessionExistsError, match="overwrite=True"):
            await store.import_session("s1", CREDS, {"pre-key": {"1": b"new"}})
        assert await store.get_keys("s1", "session", ["old"]) == {"old": b"1"}
        assert await store.load_creds("s1") is None
        await store.import_session("s1", CREDS, {"pre-key": {"1": b"new"}}, overwrite=True)
        assert await store.get_keys("s1", "session", ["old"]) == {"old": None}
        assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": b"new"}
        assert await store.load_creds("s1") == CREDS

    async def test_import_with_a_bad_value_writes_nothing(self, store: BaseStore) -> None:
        with pytest.raises(InvalidInputError):
            await store.import_session("s1", CREDS, {"pre-key": {"1": b"ok", "2": float("inf")}})
        assert await store.list_sessions() == []

    async def test_import_of_keys_only(self, store: BaseStore) -> None:
        await store.import_session("s1", None, {"pre-key": {"1": b"k"}})
        exported = await store.export_session("s1")
        assert exported is not None
        assert exported.creds is None
        assert exported.keys == {"pre-key": {"1": b"k"}}

    async def test_a_retried_import_whose_first_commit_landed_succeeds(
        self, store: BaseStore
    ) -> None:
        """What a retry after a lost answer does: the same call, the same version, again."""
        version = store._clock.next()
        blob = b'{"registrationId":1}'
        rows: list[KeyRow] = [("pre-key", "1", b'"k"')]
        replace = store._replace_session
        assert await replace("s1", blob, version, rows, False, _TIMEOUT)
        assert await replace("s1", blob, version, rows, False, _TIMEOUT)
        assert not await replace("s1", blob, store._clock.next(), rows, False, _TIMEOUT)

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

    async def test_a_late_creds_write_never_replaces_a_newer_one(self, store: BaseStore) -> None:
        """Every creds write carries the version taken when ``save_creds`` was
        called; a write retried late, with an older version, leaves the newer
        document in place and reports that it wrote nothing."""
        older, newer = store._clock.next(), store._clock.next()
        assert await store._write_creds("s1", b'{"registrationId":2}', newer, _TIMEOUT)
        assert not await store._write_creds("s1", b'{"registrationId":1}', older, _TIMEOUT)
        assert await store.load_creds("s1") == {"registrationId": 2}
        # The same write again (a retry after a lost answer) changes nothing either.
        assert not await store._write_creds("s1", b'{"registrationId":3}', newer, _TIMEOUT)
        assert await store.load_creds("s1") == {"registrationId": 2}

    async def test_a_save_after_a_load_lands_above_the_stored_version(
        self, store: BaseStore
    ) -> None:
        """``load_creds`` reads the stored version with the document, so a save
        made afterwards is versioned above it, even when the stored version
        came from a writer whose clock ran ahead of this process's."""
        ahead = store._clock.next() + 3_600 * 10**9  # an hour ahead
        assert await store._write_creds("s1", b'{"registrationId":1}', ahead, _TIMEOUT)
        assert await store.load_creds("s1") == {"registrationId": 1}
        await store.save_creds("s1", CREDS)
        assert await store.load_creds("s1") == CREDS

    async def test_fenced_writes_land_only_under_the_newest_lease(self, store: BaseStore) -> None:
        """A store with leases (``supports_leases``) writes under a lease only
        while it is the session's newest; one without refuses fenced writes.
        Either way a refused write writes nothing."""
        if not store.supports_leases:
            fence = _Fence("s1", 1)
            with pytest.raises(InvalidInputError, match="cannot fence"):
                await store.save_creds("s1", CREDS, fence=fence)
            with pytest.raises(InvalidInputError, match="cannot fence"):
                await store.set_keys("s1", {"pre-key": {"1": b"k"}}, fence=fence)
            with pytest.raises(InvalidInputError, match="cannot fence"):
                await store.clear_keys("s1", fence=fence)
            assert await store.list_sessions() == []
            return
        acquire = store.acquire_lease  # type: ignore[attr-defined]  # supports_leases says it has it
        old = await acquire("s1", owner="kit", ttl=30.0)
        new = await acquire("s1", owner="kit", ttl=30.0)
        assert new.token > old.token
        with pytest.raises(LeaseLostError):
            await store.save_creds("s1", CREDS, fence=old)
        with pytest.raises(LeaseLostError):
            await store.set_keys("s1", {"pre-key": {"1": b"k"}}, fence=old)
        assert await store.load_creds("s1") is None
        assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": None}
        await store.save_creds("s1", CREDS, fence=new)
        await store.set_keys("s1", {"pre-key": {"1": b"k"}}, fence=new)
        with pytest.raises(LeaseLostError):
            await store.clear_keys("s1", fence=old)
        assert await store.get_keys("s1", "pre-key", ["1"]) == {"1": b"k"}
        assert await store.clear_keys("s1", fence=new) == 1
