"""The contract on whole sessions: ``export_session`` reads one in a snapshot,
``import_session`` writes one in a transaction, refuses to overwrite unless
told, writes nothing from a bad batch, and succeeds when retried after its
first commit landed."""

from __future__ import annotations

from typing import Any

import pytest

from ..errors import InvalidInputError, SessionExistsError
from ..store.base import BaseStore
from ..store.codec import KeyRow
from .base import CREDS, PRIMITIVE_TIMEOUT, ContractBase

__all__ = ["ExportImportContract"]


class ExportImportContract(ContractBase):
    """Whole sessions: export, import, overwrite, bad input, a retried import."""

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
        assert await replace("s1", blob, version, rows, False, PRIMITIVE_TIMEOUT)
        assert await replace("s1", blob, version, rows, False, PRIMITIVE_TIMEOUT)
        assert not await replace("s1", blob, store._clock.next(), rows, False, PRIMITIVE_TIMEOUT)
