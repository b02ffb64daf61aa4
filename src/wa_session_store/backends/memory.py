"""An in-process store, for tests and ephemeral bots."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from typing_extensions import Unpack

from ..store.base import BaseStore, StoreOptions
from ..store.codec import KeyRow
from ..store.records import CredsRow, RowKey, SessionInfo

__all__ = ["MemoryStore"]


class _Session:
    __slots__ = ("creds", "keys", "updated_at", "version")

    def __init__(self) -> None:
        self.creds: bytes | None = None
        self.version = 0
        self.keys: dict[tuple[str, str], bytes] = {}
        self.updated_at = datetime.now(timezone.utc)


class MemoryStore(BaseStore):
    """Keeps everything in a dict; gone when the process ends.

    Values are stored encoded, exactly as the database backends store them,
    so a test on MemoryStore refuses the same inputs and returns fresh copies.
    The data survives ``close()`` and a later ``open()`` of the same instance.

    Accepts the keyword arguments of :class:`~wa_session_store.store.base.BaseStore`
    (``retry``, ``max_value_size``, ``on_retry``, ``on_giveup``).
    """

    kind = "memory"

    def __init__(self, **options: Unpack[StoreOptions]) -> None:
        super().__init__(**options)
        self._sessions: dict[str, _Session] = {}

    def _is_transient(self, exc: BaseException) -> bool:
        return False

    async def _open(self) -> None:
        pass

    async def _close(self) -> None:
        pass

    def _touch(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session()
        session.updated_at = datetime.now(timezone.utc)
        return session

    async def _read_creds(self, session_id: str, timeout: float) -> tuple[bytes, int] | None:
        session = self._sessions.get(session_id)
        if session is None or session.creds is None:
            return None
        return session.creds, session.version

    async def _read_creds_page(
        self, after: str | None, limit: int, timeout: float
    ) -> list[CredsRow]:
        rows = sorted(
            (sid, s.creds, s.version)
            for sid, s in self._sessions.items()
            if s.creds is not None and (after is None or sid > after)
        )
        return rows[:limit]

    async def _write_creds(
        self, session_id: str, blob: bytes, version: int, timeout: float
    ) -> bool:
        current = self._sessions.get(session_id)
        if current is not None and current.creds is not None and current.version >= version:
            return False
        session = self._touch(session_id)
        session.creds, session.version = blob, version
        return True

    async def _read_keys(
        self, session_id: str, category: str, ids: list[str], timeout: float
    ) -> dict[str, bytes]:
        session = self._sessions.get(session_id)
        if session is None:
            return {}
        keys = session.keys
        return {key_id: keys[category, key_id] for key_id in ids if (category, key_id) in keys}

    async def _read_categories(
        self,
        session_id: str,
        categories: list[str],
        after: tuple[str, str] | None,
        limit: int,
        timeout: float,
    ) -> list[tuple[str, str, bytes]]:
        session = self._sessions.get(session_id)
        if session is None:
            return []
        wanted = set(categories)
        rows = sorted(
            (c, k, v)
            for (c, k), v in session.keys.items()
            if c in wanted and (after is None or (c, k) > after)
        )
        return rows[:limit]

    async def _write_keys(self, session_id: str, rows: list[KeyRow], timeout: float) -> None:
        keys = self._touch(session_id).keys
        for category, key_id, blob in rows:
            if blob is None:
                keys.pop((category, key_id), None)
            else:
                keys[category, key_id] = blob
        self._forget_if_empty(session_id)

    async def _clear_keys(self, session_id: str, timeout: float) -> int:
        session = self._sessions.get(session_id)
        if session is None:
            return 0
        count = len(session.keys)
        session.keys.clear()
        self._forget_if_empty(session_id)
        return count

    def _forget_if_empty(self, session_id: str) -> None:
        session = self._sessions[session_id]
        if session.creds is None and not session.keys:
            del self._sessions[session_id]

    async def _list_sessions(self, timeout: float) -> list[SessionInfo]:
        return [
            SessionInfo(
                session_id=session_id,
                updated_at=session.updated_at,
                key_count=len(session.keys),
                has_creds=session.creds is not None,
                size=len(session.creds or b"") + sum(map(len, session.keys.values())),
            )
            for session_id, session in sorted(self._sessions.items())
        ]

    async def _delete_session(self, session_id: str, timeout: float) -> bool:
        return self._sessions.pop(session_id, None) is not None

    async def _schema_version(self, timeout: float) -> int | None:
        return None

    async def _health(self, timeout: float) -> dict[str, Any]:
        return {"round_trip_ms": 0.0, "server_version": None}

    async def _replace_session(
        self,
        session_id: str,
        creds: bytes | None,
        version: int,
        rows: list[KeyRow],
        overwrite: bool,
        timeout: float,
    ) -> bool:
        current = self._sessions.get(session_id)
        if current is not None and not overwrite:
            # The same call again (a retry) finds its own version: a success.
            return current.creds is not None and current.version == version
        self._sessions.pop(session_id, None)
        session = self._touch(session_id)
        session.creds, session.version = creds, version
        session.keys = {(c, k): v for c, k, v in rows if v is not None}
        self._forget_if_empty(session_id)
        return True

    async def _read_session(
        self, session_id: str, timeout: float
    ) -> tuple[bytes | None, list[tuple[str, str, bytes]]] | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        return session.creds, [(c, k, v) for (c, k), v in session.keys.items()]

    async def _scan(
        self, table: str, after: RowKey | None, limit: int, timeout: float
    ) -> list[tuple[RowKey, bytes]]:
        rows: list[tuple[RowKey, bytes]] = (
            [((sid, "", ""), s.creds) for sid, s in self._sessions.items() if s.creds is not None]
            if table == "creds"
            else [
                ((sid, c, k), v)
                for sid, s in self._sessions.items()
                for (c, k), v in s.keys.items()
            ]
        )
        rows.sort()
        return [row for row in rows if after is None or row[0] > after][:limit]

    async def _rewrite(
        self, table: str, changes: list[tuple[RowKey, bytes, bytes]], timeout: float
    ) -> int:
        done = 0
        for (sid, category, key_id), old, new in changes:
            session = self._sessions.get(sid)
            if session is None:
                continue
            if table == "creds":
                if session.creds == old:
                    session.creds, done = new, done + 1
            elif session.keys.get((category, key_id)) == old:
                session.keys[category, key_id], done = new, done + 1
        return done
