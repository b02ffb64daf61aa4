"""A real store whose writes can fail or wait: the network's part, at the store's edge."""

from __future__ import annotations

import asyncio
from typing import Any

from wa_session_store import StoreUnavailableError
from wa_session_store.store.base import BaseStore


class Faulty:
    """A real store whose next write can fail (before or after it commits) or
    be held at a gate: how a network failure and a slow round trip look to
    the key store."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self.fail: str | None = None  # "before" or "after" the commit
        self.gate: asyncio.Event | None = None
        self.arrived = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def _write(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        fail, self.fail = self.fail, None
        if fail == "before":
            raise StoreUnavailableError(name, args[0], 1, 0.0, ConnectionResetError("injected"))
        result = await getattr(self.store, name)(*args, **kwargs)
        if fail == "after":
            raise StoreUnavailableError(name, args[0], 1, 0.0, ConnectionResetError("injected"))
        return result

    async def set_keys(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write("set_keys", *args, **kwargs)

    async def clear_keys(self, *args: Any, **kwargs: Any) -> Any:
        return await self._write("clear_keys", *args, **kwargs)
