"""The contract on fenced writes: a store with leases writes under a lease only
while it is the session's newest; a store without refuses fenced writes."""

from __future__ import annotations

import pytest

from ..errors import InvalidInputError, LeaseLostError
from ..store.base import BaseStore
from .base import CREDS, ContractBase

__all__ = ["FencingContract"]


class _Fence:
    """A lease's session and token, for a store that has no leases."""

    def __init__(self, session_id: str, token: int) -> None:
        self.session_id = session_id
        self.token = token


class FencingContract(ContractBase):
    """Fencing: writes under a lease land only while it is the newest."""

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
