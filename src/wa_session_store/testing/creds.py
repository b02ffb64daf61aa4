"""The contract on creds: a document reads back equal, as a fresh copy, and a
late write never replaces a newer one (the version each save carries)."""

from __future__ import annotations

from ..store.base import BaseStore
from .base import CREDS, PRIMITIVE_TIMEOUT, ContractBase

__all__ = ["CredsContract"]


class CredsContract(ContractBase):
    """Creds: round trips, fresh copies, and the version that orders saves."""

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

    async def test_a_late_creds_write_never_replaces_a_newer_one(self, store: BaseStore) -> None:
        """Every creds write carries the version taken when ``save_creds`` was
        called; a write retried late, with an older version, leaves the newer
        document in place and reports that it wrote nothing."""
        older, newer = store._clock.next(), store._clock.next()
        assert await store._write_creds("s1", b'{"registrationId":2}', newer, PRIMITIVE_TIMEOUT)
        assert not await store._write_creds("s1", b'{"registrationId":1}', older, PRIMITIVE_TIMEOUT)
        assert await store.load_creds("s1") == {"registrationId": 2}
        # The same write again (a retry after a lost answer) changes nothing either.
        assert not await store._write_creds("s1", b'{"registrationId":3}', newer, PRIMITIVE_TIMEOUT)
        assert await store.load_creds("s1") == {"registrationId": 2}

    async def test_a_save_after_a_load_lands_above_the_stored_version(
        self, store: BaseStore
    ) -> None:
        """``load_creds`` reads the stored version with the document, so a save
        made afterwards is versioned above it, even when the stored version
        came from a writer whose clock ran ahead of this process's."""
        ahead = store._clock.next() + 3_600 * 10**9  # an hour ahead
        assert await store._write_creds("s1", b'{"registrationId":1}', ahead, PRIMITIVE_TIMEOUT)
        assert await store.load_creds("s1") == {"registrationId": 1}
        await store.save_creds("s1", CREDS)
        assert await store.load_creds("s1") == CREDS
