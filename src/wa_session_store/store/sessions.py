"""The calls on whole sessions: listing, deleting, and moving one between stores.

:class:`SessionCalls` is the part of :class:`~wa_session_store.store.base.BaseStore`
that handles a session as one unit: :meth:`~SessionCalls.import_session`
writes its creds and every key in one transaction, and
:meth:`~SessionCalls.export_session` reads them in one snapshot, so a copy
(:func:`~wa_session_store.copy_sessions`), a Baileys folder import or a
migration never leaves half a session behind. The docstrings are the API
reference and what ``tools/sync_twins.py`` generates the blocking twins from.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import SessionExistsError
from .calls import StoreCalls
from .ids import check_session_id
from .records import SessionExport, SessionInfo

if TYPE_CHECKING:
    from .rows import RowCodec, VersionClock

__all__ = ["SessionCalls"]


class SessionCalls(StoreCalls):
    """The whole-session calls of :class:`~wa_session_store.store.base.BaseStore`.

    Mixed into it, which supplies the row codec, the creds clock and
    ``MAX_WRITE_SIZE``.
    """

    if TYPE_CHECKING:  # supplied by BaseStore
        MAX_WRITE_SIZE: int
        _rows: RowCodec
        _clock: VersionClock

    async def list_sessions(self) -> list[SessionInfo]:
        """Return every stored session (with creds or keys), ordered by id."""
        return await self._call("list_sessions", None, self._list_sessions)

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session's creds and every key, atomically.

        Returns:
            True if anything was stored for it.
        """
        sid = check_session_id(session_id)
        return await self._call("delete_session", sid, partial(self._delete_session, sid))

    async def import_session(
        self,
        session_id: str,
        creds: Mapping[str, Any] | None,
        keys: Mapping[str, Mapping[Any, Any]],
        *,
        overwrite: bool = False,
    ) -> None:
        """Write a whole session — creds and every key — in one transaction.

        For imports and migrations between stores. Everything is validated
        and encoded first; then, in one transaction, the session is checked
        for, anything stored for it is removed (with ``overwrite``), and the
        creds and keys are written. ``None`` values in ``keys`` are skipped.

        Raises:
            SessionExistsError: the session holds creds or keys and
                ``overwrite`` is False (nothing is written).
            InvalidInputError: anything invalid (nothing is written).
        """
        sid = check_session_id(session_id)
        blob = None if creds is None else self._rows.creds_value(sid, creds)
        encoded = self._rows.key_rows(
            sid, keys, max_write=self.MAX_WRITE_SIZE, extra=len(blob or b"")
        )
        rows = [row for row in encoded if row[2] is not None]
        version = self._clock.next()
        written = await self._call(
            "import_session",
            sid,
            partial(self._replace_session, sid, blob, version, rows, overwrite),
        )
        if not written:
            raise SessionExistsError(
                f"session {sid!r} is already stored; pass overwrite=True to replace it"
            )

    async def export_session(self, session_id: str) -> SessionExport | None:
        """Read a whole session — creds and every key — in one snapshot.

        Returns:
            The :class:`SessionExport`, or None if nothing is stored for it.
        """
        sid = check_session_id(session_id)
        found = await self._call("export_session", sid, partial(self._read_session, sid))
        return None if found is None else self._rows.session(sid, found)
