"""Calls into rows and rows into values: the I/O-free layer of every store.

:class:`RowCodec` does everything :class:`~wa_session_store.store.base.BaseStore`
does between a call and the database, without touching it: arguments
validated, values encoded (BufferJSON) and sealed (with the store's cipher)
into the rows a backend writes, and the rows a backend read opened and
decoded back, with the errors that say what is wrong. Like psycopg_pool's
``base.py``, it holds no connection and awaits nothing, so it is tested
without a backend; the store adds the round trip and the retries.

:class:`VersionClock` issues the creds versions that make a late retry
unable to overwrite newer data.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..errors import DecodeError, DecryptionError, InvalidInputError, InvalidTypeError, shown
from .codec import (
    DEFAULT_MAX_VALUE_SIZE,
    MAX_WRITE_SIZE,
    KeyRow,
    decode_value,
    encode_creds,
    encode_key_batch,
)
from .crypto import MAGIC, Cipher, associated_data, sealed_key_id
from .ids import check_category, check_key_id
from .records import CredsPage, CredsRow, RowKey, SessionExport

__all__ = [
    "RowCodec",
    "VersionClock",
    "category_query",
    "check_page_limit",
    "collector_paused",
    "page_end",
    "split_session_rows",
]


class VersionClock:
    """Issues creds versions: strictly increasing, and above any version seen.

    Versions are nanoseconds since the epoch, bumped past the last one issued
    or observed, so a save retried late (carrying its old version) can never
    overwrite a newer save, and a new process, which observes the stored
    version when it loads the creds, writes above it even if its clock is
    behind.

    Clocks of different hosts differ, so a stored version may be ahead of a
    save called after it: such a save does not land, and says so
    (:class:`~wa_session_store.CredsConflictError`). To tell that from a save
    overtaken by a later save of the same store (which is stored, then
    replaced, as it should be), the clock remembers the versions it issued
    for a session while any save of that session is in flight
    (:meth:`saving`, :meth:`overtaken`).

    Args:
        now: the wall clock in nanoseconds (default ``time.time_ns``).
    """

    __slots__ = ("_in_flight", "_issued", "_last", "now")

    def __init__(self, now: Callable[[], int] = time.time_ns) -> None:
        self._last = 0
        self.now = now
        self._in_flight: dict[str, int] = {}
        self._issued: dict[str, set[int]] = {}

    def next(self) -> int:
        self._last = max(self._last + 1, self.now())
        return self._last

    def observe(self, version: int) -> None:
        self._last = max(self._last, version)

    @contextlib.contextmanager
    def saving(self, session_id: str) -> Iterator[int]:
        """A version for one save of ``session_id``, remembered while the save is in flight."""
        version = self.next()
        self._in_flight[session_id] = self._in_flight.get(session_id, 0) + 1
        self._issued.setdefault(session_id, set()).add(version)
        try:
            yield version
        finally:
            left = self._in_flight[session_id] - 1
            if left:
                self._in_flight[session_id] = left
            else:
                # The last save in flight: no save of the session is left to ask.
                del self._in_flight[session_id], self._issued[session_id]

    def overtaken(self, session_id: str, version: int, stored: int) -> bool:
        """Whether ``stored`` was issued by this clock for a save of ``session_id``
        called after the one of ``version`` (which is in flight)."""
        return stored > version and stored in self._issued.get(session_id, ())


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a synchronous burst of allocations.

    Decoding a page of creds builds tens of thousands of dicts, none of them
    cyclic; left on, the collector runs full passes over them and doubles the
    time. Used around synchronous work (nothing else runs meanwhile), and
    around two bounded bursts whose awaits let other tasks run with it
    paused: ``restore_all``'s bulk read at start-up and ``close_all``'s final
    saves (bounded by their deadline). Nested pauses are one: the outermost
    switches it back on (if it was on), at once.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def page_end(rows: Sequence[tuple[Any, ...]], limit: int) -> str | None:
    """The ``next_after`` of a page of rows read with ``limit`` (session id first):
    its last session id when it is full, else None (it was the last)."""
    return str(rows[-1][0]) if len(rows) >= limit else None


def check_page_limit(limit: object) -> int:
    """A page size of sessions: an int from 1 to 100,000 (else InvalidInputError)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
        raise InvalidInputError(f"limit must be an int from 1 to 100000, not {limit!r}")
    return limit


def check_page(after: object, limit: object, default: int) -> tuple[str | None, int]:
    """A page's ``after`` (a session id or None) and ``limit`` (None: ``default``), checked."""
    if after is not None and not isinstance(after, str):
        raise InvalidTypeError(f"after must be a session id (str) or None, not {after!r}")
    return after, check_page_limit(default if limit is None else limit)


def split_session_rows(
    rows: list[tuple[str | None, str | None, bytes]],
) -> tuple[bytes | None, list[tuple[str, str, bytes]]] | None:
    """Split one session's rows, as backends read them in one statement for
    :meth:`BaseStore.export_session`: the creds (the row without a category) and
    the key rows; None when there are no rows."""
    if not rows:
        return None
    creds = next((value for category, _, value in rows if category is None), None)
    keys = [(c, k, v) for c, k, v in rows if c is not None and k is not None]
    return creds, keys


class RowCodec:
    """Encodes and seals what a store writes; opens and decodes what it reads.

    Args:
        max_value_size: the largest encoded value accepted, in bytes
            (default 64 MiB, at most 512 MiB).
        cipher: seals every value (default None: plain BufferJSON).
        allow_plaintext: with a cipher, also read values that are not sealed
            (default False: they raise DecryptionError).

    Raises:
        InvalidTypeError: a ``cipher`` that is not a Cipher.
        InvalidInputError: a bad ``max_value_size``.
    """

    __slots__ = ("allow_plaintext", "cipher", "clock", "max_value_size")

    def __init__(
        self,
        *,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        cipher: Cipher | None = None,
        allow_plaintext: bool = False,
    ) -> None:
        if cipher is not None and not isinstance(cipher, Cipher):
            raise InvalidTypeError(
                f"cipher must provide active, seal() and open() (e.g. AESGCMCipher), "
                f"not {type(cipher).__name__}"
            )
        if (
            isinstance(max_value_size, bool)
            or not isinstance(max_value_size, int)
            or not (1 <= max_value_size <= MAX_WRITE_SIZE)
        ):
            raise InvalidInputError(
                f"max_value_size must be an int of bytes from 1 to {MAX_WRITE_SIZE:,} "
                f"(512 MiB, the same on every backend), not {shown(max_value_size)}"
            )
        self.max_value_size = max_value_size
        self.cipher = cipher
        self.allow_plaintext = bool(allow_plaintext)
        self.clock = VersionClock()

    # -- writes ------------------------------------------------------------------

    def creds_value(self, session_id: str, creds: object) -> bytes:
        """The creds document as its stored value: validated, encoded, sealed.

        Raises:
            InvalidInputError: not a mapping, a value JSON cannot hold, or over
                ``max_value_size``.
        """
        blob = encode_creds(creds, session_id=session_id, max_size=self.max_value_size)
        if self.cipher is not None:
            blob = self.cipher.seal(blob, associated_data(session_id))
        return blob

    def key_rows(
        self, session_id: str, data: object, *, max_write: int, extra: int = 0
    ) -> list[KeyRow]:
        """A key batch as rows (``None`` value: delete), validated, encoded and sealed.

        ``extra`` bytes more travel in the same write (an import's creds).

        Raises:
            InvalidInputError: an invalid id or value anywhere in the batch, or
                a write carrying more than ``max_write`` bytes.
        """
        rows = encode_key_batch(data, max_size=self.max_value_size)
        cipher = self.cipher
        if cipher is not None:
            rows = [
                (c, k, None if v is None else cipher.seal(v, associated_data(session_id, c, k)))
                for c, k, v in rows
            ]
        size = extra + sum(len(v) for _, _, v in rows if v)
        # PostgreSQL sends a batch as one statement, which may not exceed 1 GB;
        # the same limit holds on every backend, so none accepts what another refuses.
        if size > max_write:
            raise InvalidInputError(
                f"one write for session {session_id!r} would carry {size:,} bytes; at most "
                f"{max_write:,} are allowed on every backend: split the batch"
            )
        return rows

    # -- reads -------------------------------------------------------------------

    def creds(self, session_id: str, blob: bytes) -> dict[str, Any]:
        """A stored creds value opened and decoded.

        Raises:
            DecodeError, DecryptionError: it does not decode or open.
        """

        # Hot path (a restore decodes thousands): as in key(), the message and
        # the associated data are only built when they are used.
        def what() -> str:
            return f"creds of session {session_id!r}"

        if self.cipher is not None or blob[:1] == MAGIC[:1]:
            blob = self.unseal(blob, associated_data(session_id), what())
        creds = decode_value(blob, what=what)
        if not isinstance(creds, dict):
            raise DecodeError(f"{what()} are not a JSON object")
        return creds

    def key(self, session_id: str, category: str, key_id: str, blob: bytes) -> Any:
        """A stored key value opened and decoded (DecodeError, DecryptionError)."""

        # Hot path (a group send reads hundreds of keys): the message and the
        # associated data are only built when they are used.
        def what() -> str:
            return f"{category} key {key_id!r} of session {session_id!r}"

        if self.cipher is not None or blob[:1] == MAGIC[:1]:
            blob = self.unseal(blob, associated_data(session_id, category, key_id), what())
        return decode_value(blob, what=what)

    def unseal(self, blob: bytes, aad: bytes, what: str) -> bytes:
        """``blob`` opened with the cipher, or as it is when unsealed and allowed.

        Raises:
            DecryptionError: sealed without a cipher, unsealed without
                ``allow_plaintext``, or it does not open.
        """
        sealed = bytes(blob[: len(MAGIC)]) == MAGIC
        if self.cipher is None:
            if sealed:
                raise DecryptionError(
                    f"{what} is encrypted (key {sealed_key_id(bytes(blob))!r}); open the store "
                    "with cipher=AESGCMCipher(...) holding that key"
                )
            return blob
        if not sealed:
            if self.allow_plaintext:
                return blob
            raise DecryptionError(
                f"{what} is stored unencrypted; pass allow_plaintext=True to read it while "
                "migrating, and run reencrypt() to seal it"
            )
        try:
            return self.cipher.open(bytes(blob), aad)
        except DecryptionError as exc:
            raise DecryptionError(f"{what}: {exc}") from None

    def creds_page(self, rows: list[CredsRow], limit: int) -> CredsPage:
        """A page of creds rows read with ``limit``, decoded (see :meth:`decode_creds`)."""
        page = CredsPage(next_after=page_end(rows, limit))
        self.decode_creds(page, rows)
        return page

    def decode_creds(self, page: CredsPage, rows: list[CredsRow]) -> None:
        """Decode creds rows into ``page``; their versions observed by the clock.

        A row that does not decode or open goes into ``failed``, the others
        into ``creds``.
        """
        if rows:
            self.clock.observe(max(version for _, _, version in rows))
        with collector_paused():
            for sid, blob, _ in rows:
                try:
                    page.creds[sid] = self.creds(sid, blob)
                except (DecodeError, DecryptionError) as exc:
                    page.failed[sid] = exc

    def session(
        self, session_id: str, found: tuple[bytes | None, list[tuple[str, str, bytes]]]
    ) -> SessionExport:
        """A whole session's rows (creds value or None, key rows) decoded."""
        blob, rows = found
        creds = None if blob is None else self.creds(session_id, blob)
        keys: dict[str, dict[str, Any]] = {}
        for category, key_id, value in rows:
            keys.setdefault(category, {})[key_id] = self.key(session_id, category, key_id, value)
        return SessionExport(creds=creds, keys=keys)

    # -- maintenance -------------------------------------------------------------

    def resealed(
        self, table: str, rows: list[tuple[RowKey, bytes]], cipher: Cipher
    ) -> list[tuple[RowKey, bytes, bytes]]:
        """``(key, old value, new value)`` for the rows not sealed with ``cipher``'s
        active key (``cipher`` is this codec's own).

        Raises:
            DecryptionError: a row that does not open.
        """
        changes: list[tuple[RowKey, bytes, bytes]] = []
        for key, blob in rows:
            if sealed_key_id(bytes(blob)) == cipher.active:
                continue
            sid, category, key_id = key
            aad = (
                associated_data(sid) if table == "creds" else associated_data(sid, category, key_id)
            )
            plain = self.unseal(blob, aad, f"{table} row {key!r}")
            changes.append((key, bytes(blob), cipher.seal(plain, aad)))
        return changes


def category_query(
    categories: Iterable[str], after: object, limit: object
) -> tuple[list[str], tuple[str, str] | None, int]:
    """The arguments of ``load_categories`` checked: sorted categories, ``after``, ``limit``.

    Raises:
        InvalidTypeError: ``categories`` is not an iterable of str, or a bad ``after``.
        InvalidInputError: an invalid category or key id, or a bad ``limit``.
    """
    if isinstance(categories, (str, bytes)) or not isinstance(categories, Iterable):
        raise InvalidTypeError(
            f"categories must be an iterable of str, not {type(categories).__name__}"
        )
    cats = sorted({check_category(category) for category in categories})
    start: tuple[str, str] | None = None
    if after is not None:
        if not isinstance(after, tuple) or len(after) != 2:
            raise InvalidTypeError(
                "after must be None or the (category, key_id) of the last row of a page"
            )
        start = (check_category(after[0]), check_key_id(after[1]))
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
        raise InvalidInputError(f"limit must be an int from 1 to 100,000, not {shown(limit)}")
    return cats, start, limit
