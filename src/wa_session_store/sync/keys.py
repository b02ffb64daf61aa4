"""The blocking Signal key store: :class:`SyncAuthKeys`.

What a synchronous client calls for its keys (``get``, ``set``, ``clear``,
``with keys.transaction():``), each call run by the
:class:`~wa_session_store.AuthKeys` it drives on the loop thread. A
transaction belongs to the thread that opened it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..auth.keys import DEFAULT_PRELOAD, KeyTransaction
from ..auth.state import AuthKeys
from .loop import _Facade

__all__ = ["SyncAuthKeys"]


class SyncAuthKeys(_Facade):
    """The blocking Signal key store: ``get``, ``set``, ``clear`` without ``await``.

    For synchronous clients whose key store is plain methods. It behaves as
    the :class:`~wa_session_store.AuthKeys` it drives, in its mode: the same
    cache, write-through or barrier, and transactions (``with
    keys.transaction():``, which belong to the thread that opened them).
    """

    __slots__ = ("_keys", "_local")

    def __init__(self, keys: AuthKeys) -> None:
        self._bind()
        self._keys = keys
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<SyncAuthKeys of {self._keys!r}>"

    def _transaction(self) -> KeyTransaction | None:
        txn: KeyTransaction | None = getattr(self._local, "transaction", None)
        return txn

    def get(self, category: str, ids: Iterable[str | int]) -> dict[str, Any]:
        """``{id: value or None}`` for every id asked for.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.get`, inside this
        thread's transaction if one is open.
        """
        txn = self._transaction()
        return self._run("get", lambda: self._keys._get(category, ids, txn))

    def set(self, data: Mapping[str, Mapping[Any, Any]]) -> None:
        """Write ``{category: {id: value or None}}`` atomically; ``None`` deletes.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.set`, inside this
        thread's transaction if one is open.
        """
        txn = self._transaction()
        return self._run("set", lambda: self._keys._set(data, txn))

    def clear(self) -> None:
        """Delete every key of the session (its creds stay), pending writes included.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.clear`, emptying
        this thread's open transactions too.
        """
        txn = self._transaction()
        return self._run("clear", lambda: self._keys._clear(txn))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``with keys.transaction():`` — the blocking twin of
        :meth:`~wa_session_store.AuthKeys.transaction`.

        The ``get`` and ``set`` calls this thread makes inside the block join
        the transaction; its writes are stored in one batch when the
        outermost block ends, and an exception discards the writes of its block.
        """
        parent = self._transaction()
        txn = KeyTransaction(self._keys, parent)
        self._local.transaction = txn
        try:
            yield
        except BaseException:
            txn.discard()
            raise
        finally:
            self._local.transaction = parent
        self._run("transaction", txn.commit)

    # -- generated from AuthKeys by `python tools/sync_twins.py --write`: do not edit --------------
    def flush(self) -> None:
        """Store every write made before this call; wait for it.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.flush`: the same arguments, result
        and errors.
        """
        return self._run("flush", lambda: self._keys.flush())

    def preload(self, categories: Iterable[str] = DEFAULT_PRELOAD) -> int:
        """Load whole categories into the cache, a page of rows per query.

        Blocking twin of :meth:`~wa_session_store.AuthKeys.preload`: the same arguments, result
        and errors.
        """
        return self._run("preload", lambda: self._keys.preload(categories))

    # -- end of generated code ---------------------------------------------------------------------
