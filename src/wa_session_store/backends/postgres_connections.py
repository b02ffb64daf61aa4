"""What the PostgreSQL backend knows of connections below the SQL: conninfo
parsing, the settings of the connections its own pool opens, and
socket-level checks. (Which connect failures no retry can fix is in
``postgres_errors.py``, with every other classification.)

No statement is sent here; :class:`~wa_session_store.PostgresStore` uses these
when it builds and opens its pool, classifies a failed attempt, or checks out
a connection.
"""

from __future__ import annotations

import math
import os
import select
import socket
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import InvalidInputError, InvalidTypeError
from ..store.redaction import SECRET_PARAMS

__all__ = [
    "closed_by_server",
    "connection_settings",
    "parse_conninfo",
    "scrub",
    "shutdown",
    "target",
]


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


def target(params: dict[str, Any]) -> str:
    """``user@host:port[,host:port...]/dbname`` of a parsed conninfo (never its password)."""
    hosts = str(params.get("host") or params.get("hostaddr") or "").split(",")
    ports = str(params.get("port") or "").split(",")
    if len(ports) == 1:  # libpq: one port serves every host
        ports *= len(hosts)
    servers = ",".join(
        f"{host}:{port}" if port else host  # no port: libpq's default
        for host, port in zip(hosts, ports + [""] * len(hosts), strict=False)
    )
    return f"{params.get('user', '')}@{servers}/{params.get('dbname', '')}"


def connection_settings(
    params: dict[str, Any],
    *,
    timeout: float,
    prepare_threshold: int | None,
    application_name: str,
) -> dict[str, Any]:
    """The settings of every connection a store's own pool opens, for
    attempts of ``timeout`` seconds to the servers ``params`` (a parsed
    conninfo) lists: autocommit, and a dead peer noticed by the kernel too
    (``connect_timeout``, TCP keepalives, ``tcp_user_timeout``)."""
    settings: dict[str, Any] = {
        "autocommit": True,
        "prepare_threshold": prepare_threshold,
        "application_name": application_name,
        "connect_timeout": max(2, math.ceil(timeout)),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        # Unacknowledged data for longer than an attempt may last: the
        # kernel drops the connection, so even a stray await ends.
        "tcp_user_timeout": int(timeout * 1000),
    }
    if _host_count(params) > 1 and not (
        params.get("target_session_attrs") or os.environ.get("PGTARGETSESSIONATTRS")
    ):
        # libpq's default ("any") would keep a standby or a demoted
        # primary that is listed first: every write would fail there.
        settings["target_session_attrs"] = "read-write"
    return settings


def _host_count(params: dict[str, Any]) -> int:
    """How many servers a conninfo lists (``host`` or ``hostaddr``, comma-separated)."""
    hosts = params.get("host") or params.get("hostaddr") or ""
    return len(str(hosts).split(",")) if hosts else 1


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
