"""``open_store(url)``: a store from a URL."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .errors import InvalidInputError, InvalidTypeError
from .store import BaseStore

__all__ = ["DEFAULT_URL", "SECRET_PARAMS", "open_store", "redact_text", "redact_url"]

#: The embedded default: a SQLite file in the current directory.
DEFAULT_URL = "sqlite:///wa_sessions.db"

_ALLOWED = "memory://, sqlite:///relative/path, sqlite:////absolute/path, postgresql://…"


def open_store(url: str = DEFAULT_URL, **options: Any) -> BaseStore:
    """Return a store (not yet opened) for ``url``.

    Accepted URLs:

    - ``memory://``: a :class:`~wa_session_store.MemoryStore`;
    - ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
      (three slashes, then the path): a :class:`~wa_session_store.SQLiteStore`;
    - ``postgresql://…`` or ``postgres://…`` (a libpq URL):
      a :class:`~wa_session_store.PostgresStore`.

    ``options`` go to the store's constructor. Use the result with
    ``async with open_store(url) as store:``.

    Raises:
        InvalidTypeError: ``url`` is not a str.
        InvalidInputError: an unknown scheme or a malformed URL (the message
            never repeats a password the URL may hold).
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
        from .backends.memory import MemoryStore

        return MemoryStore(**options)
    if scheme == "sqlite":
        path = unquote(urlsplit(url).path[1:]) if rest.startswith("/") else ""
        if not path:
            raise InvalidInputError(
                "sqlite URL needs a path: sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        from .backends.sqlite import SQLiteStore

        return SQLiteStore(path, **options)
    if scheme in ("postgresql", "postgres"):
        from .backends.postgres import PostgresStore

        return PostgresStore(url, **options)
    raise InvalidInputError(f"unknown store URL scheme {scheme[:20]!r}: expected one of {_ALLOWED}")


#: Connection parameters whose values are secrets (libpq's names).
SECRET_PARAMS = ("password", "sslpassword")

# key=value conninfo: a secret parameter's value, quoted or bare.
_KV_SECRET = re.compile(r"(?i)\b((?:ssl)?password)(\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']*)")
# URLs inside a longer text (a message): up to white space or a quote.
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"]*")


def redact_url(url: str) -> str:
    """``url`` without its secrets: the password in its user info, and the value
    of every secret parameter (``password=``, ``sslpassword=``), in a URL's
    query string or in a ``key=value`` conninfo string."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _KV_SECRET.sub(r"\1\2***", url)
    authority, slash, tail = rest.partition("/")
    authority, question, query_in_authority = authority.partition("?")
    if "@" in authority:
        # The last '@' ends the user info: an unescaped '@' in a password
        # (which libpq refuses) is hidden along with the rest of it.
        userinfo, _, host = authority.rpartition("@")
        user = userinfo.split(":", 1)[0]
        authority = f"{user}{':***' if ':' in userinfo else ''}@{host}"
    url = f"{scheme}{sep}{authority}{question}{query_in_authority}{slash}{tail}"
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name.lower() in SECRET_PARAMS for name, _ in query):
        return url
    query = [(name, "***" if name.lower() in SECRET_PARAMS else value) for name, value in query]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def redact_text(text: str) -> str:
    """``text`` (a message) with every URL and ``key=value`` secret in it redacted."""
    text = _URL.sub(lambda match: redact_url(match.group()), text)
    return _KV_SECRET.sub(r"\1\2***", text)
