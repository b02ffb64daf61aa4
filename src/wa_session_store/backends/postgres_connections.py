"""What the PostgreSQL backend knows of connections below the SQL: conninfo
parsing, which connect failures no retry can fix, and socket-level checks.

No statement is sent here; :class:`~wa_session_store.PostgresStore` uses these
when it opens its pool, classifies a failed attempt, or checks out a connection.
"""

from __future__ import annotations

import os
import select
import socket
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import InvalidInputError, InvalidTypeError
from ..redaction import SECRET_PARAMS

__all__ = ["closed_by_server", "parse_conninfo", "permanent_connect_failure", "scrub", "shutdown"]


# Connection failures no retry can fix: (what the driver says, what to fix).
# libpq gives no SQLSTATE for a refused connection, so its messages are matched.
_PERMANENT_CONNECT: Final = (
    ("does not exist", "fix the role or database name in the DSN, or create it"),
    ("password authentication failed", "fix the user name or password in the DSN"),
    ("authentication failed", "fix the user name or credentials in the DSN"),
    ("no password supplied", "put the password in the DSN (or in PGPASSWORD or a passfile)"),
    ("no pg_hba.conf entry", "allow this client in the server's pg_hba.conf, or fix the DSN"),
    ("not permitted to log in", "grant LOGIN to the role, or use another one"),
    ("permission denied for database", "grant CONNECT on the database to the role"),
    ("invalid integer value", "fix that option's value in the DSN"),
    ("invalid port number", "use a port from 1 to 65535 in the DSN"),
    (
        "invalid sslmode value",
        "use an sslmode libpq knows (disable, allow, prefer, require, verify-ca, verify-full)",
    ),
    ("invalid connection option", "remove or fix that option in the DSN"),
    ("server does not support ssl", "use an sslmode that the server supports, or enable SSL on it"),
    ("certificate", "fix the certificates (sslrootcert, sslcert, sslkey) or the sslmode"),
    ("name or service not known", "fix the host name in the DSN"),
    ("no address associated with hostname", "fix the host name in the DSN"),
    ("nodename nor servname", "fix the host name in the DSN"),
)


def permanent_connect_failure(exc: BaseException) -> tuple[str, str] | None:
    """``(reason, what to fix)`` when a failed connect cannot succeed on a retry, else None.

    The reason is the driver's message in one line. A host that does not
    resolve *now* ("Temporary failure in name resolution"), a refused or
    timed-out connection, a server starting up or shutting down, and too
    many connections stay transient.
    """
    if not isinstance(exc, psycopg.OperationalError) or exc.sqlstate is not None:
        return None
    text = " ".join(str(exc).split())
    lowered = text.lower()
    for marker, fix in _PERMANENT_CONNECT:
        if marker in lowered:
            for prefix in ("connection failed: ", "connection is bad: "):
                text = text.removeprefix(prefix)
            return text, fix
    return None


def scrub(text: str, params: dict[str, Any]) -> str:
    """``text`` with every secret parameter's value (of 4 or more characters) blanked."""
    for name in SECRET_PARAMS:
        value = params.get(name)
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def parse_conninfo(conninfo: object) -> dict[str, Any]:
    if not isinstance(conninfo, str):
        raise InvalidTypeError(f"conninfo must be a str, not {type(conninfo).__name__}")
    if "\x00" in conninfo:
        raise InvalidInputError("conninfo contains a NUL character, which libpq cannot take")
    scheme, sep, rest = conninfo.partition("://")
    if sep and scheme.lower() in ("postgresql", "postgres"):
        authority = rest.split("/", 1)[0].split("?", 1)[0]
        if authority.count("@") > 1:
            # libpq would end the user info at the first '@' and take the rest
            # of the password for a host name, which its errors then repeat.
            raise InvalidInputError(
                "the user name or password in the PostgreSQL URL holds an unescaped '@': "
                "write each '@' in them as %40 (percent-encoding)"
            )
    try:
        params = conninfo_to_dict(conninfo)
        make_conninfo(conninfo)
    except psycopg.ProgrammingError:
        # libpq's message quotes the string, which may hold a password.
        raise InvalidInputError(
            "malformed PostgreSQL conninfo: expected a URL such as "
            "postgresql://user:password@host:5432/dbname or 'host=... dbname=...'"
        ) from None
    return params


def closed_by_server(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection's socket already has data or EOF waiting.

    An idle connection receives nothing unless the server is closing it (or
    sends a notification, which this library never listens to): a readable
    socket means the connection is unusable. A local syscall, not a round trip.
    """
    if conn.closed or conn.broken:
        return True
    try:
        poller = select.poll()  # not select(): descriptors above 1024 are common in big bots
        poller.register(conn.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.OperationalError):
        return True


def shutdown(conn: psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down, waking whatever awaits on it.

    A local operation: it needs no answer from the network, so it works when
    packets are silently dropped. The duplicate descriptor is closed at once;
    the original stays owned by libpq.
    """
    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except (OSError, psycopg.OperationalError):
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
