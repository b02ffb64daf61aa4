"""A backend registered by URL scheme: ``kitdemo://NAME`` is an in-process database.

Stores opened with one NAME share their data (as stores on one file or
schema do), which is what the contract kit's ``make_store`` needs. It is
:class:`~wa_session_store.MemoryStore` underneath: what this package shows
is the registration and the factory, not a new storage engine. Two
subclasses each break one rule of the contract, so the kit must fail them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wa_session_store import InvalidInputError, MemoryStore

_DATABASES: dict[str, Any] = {}


class KitdemoStore(MemoryStore):
    """A MemoryStore whose data lives in the named database of the process."""

    kind = "kitdemo"

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(**options)
        self._sessions = _DATABASES.setdefault(name, self._sessions)
        self.name = name

    def _describe(self) -> str:
        return f"kitdemo {self.name}"


class VersionlessStore(KitdemoStore):
    """Broken: the last creds write wins, whatever its version."""

    async def _write_creds(
        self, session_id: str, blob: bytes, version: int, timeout: float
    ) -> bool:
        session = self._touch(session_id)
        session.creds, session.version = blob, version
        return True


class TornBatchStore(KitdemoStore):
    """Broken: a key batch is written row by row, each row on its own."""

    async def _write_keys(
        self, session_id: str, rows: list[tuple[str, str, bytes | None]], timeout: float
    ) -> None:
        for row in rows:
            await super()._write_keys(session_id, [row], timeout)
            await asyncio.sleep(0)  # another task can read the batch half-written


def _name(url: str) -> str:
    name = url.partition("://")[2]
    if not name or "/" in name:
        raise InvalidInputError(f"a kitdemo URL names its database: kitdemo://NAME, not {url!r}")
    return name


def open_kitdemo_store(url: str, **options: Any) -> KitdemoStore:
    """The factory of ``kitdemo://NAME``, as the entry point names it."""
    return KitdemoStore(_name(url), **options)


def open_versionless_store(url: str, **options: Any) -> KitdemoStore:
    """The factory of ``kitdemo-versionless://NAME``."""
    return VersionlessStore(_name(url), **options)


def open_torn_store(url: str, **options: Any) -> KitdemoStore:
    """The factory of ``kitdemo-torn://NAME``."""
    return TornBatchStore(_name(url), **options)
