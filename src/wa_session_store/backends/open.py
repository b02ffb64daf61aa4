"""``open_store(url)``: a store from a URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import InvalidInputError, InvalidTypeError
from ..store.base import BaseStore
from ..store.redaction import SECRET_PARAMS, redact_text, redact_url
from .schemes import installed_backend

__all__ = ["DEFAULT_URL", "SECRET_PARAMS", "open_store", "redact_text", "redact_url"]

#: The embedded default: a SQLite file in the current directory.
DEFAULT_URL = "sqlite:///wa_sessions.db"

_ALLOWED = (
    "memory://, sqlite:///relative/path, sqlite:////absolute/path, postgresql://…, "
    "or a scheme an installed backend registers"
)


def open_store(url: str = DEFAULT_URL, **options: Any) -> BaseStore:
    """Return a store (not yet opened) for ``url``.

    Accepted URLs:

    - ``memory://``: a :class:`~wa_session_store.MemoryStore`;
    - ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
      (three slashes, then the path): a :class:`~wa_session_store.SQLiteStore`;
    - ``postgresql://…`` or ``postgres://…`` (a libpq URL):
      a :class:`~wa_session_store.PostgresStore`;
    - any other scheme that an installed package registers under the
      entry-point group ``wa_session_store.backends``: what its factory
      returns for ``factory(url, **options)``. The built-in schemes above
      always mean the built-in backends, whatever is installed.

    ``options`` go to the store's constructor. Use the result with
    ``async with open_store(url) as store:``.

    Raises:
        InvalidTypeError: ``url`` is not a str.
        InvalidInputError: an unknown scheme (the message lists the built-in
            and the installed ones) or a malformed URL (the message never
            repeats a password the URL may hold).
        StoreConfigurationError: an installed backend that cannot be used:
            two packages register the scheme, or its factory cannot be
            loaded or does not return a store.
    """
    if not isinstance(url, str):
        raise InvalidTypeError(f"url must be a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise InvalidInputError(f"not a store URL (no '://'): expected one of {_ALLOWED}")
    if scheme == "memory":
        if rest:
            raise InvalidInputError("memory:// takes nothing after '://': use exactly memory://")
        from .memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        path = unquote(urlsplit(url).path[1:]) if rest.startswith("/") else ""
        if not path:
            raise InvalidInputError(
                "sqlite URL needs a path: sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        from .sqlite import SQLiteStore

        return SQLiteStore(path, **options)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url, **options)
    return installed_backend(scheme, url, options)
