"""What PostgreSQL's errors mean to a store: worth another attempt, or not.

One table decides, by SQLSTATE, as PostgreSQL documents its error codes
(Appendix A, "PostgreSQL Error Codes"): every class has a verdict, and the
few codes whose meaning differs from their class's are listed above it. A
statement that fails with a ``FAIL`` code raises ``StoreOperationError`` at
once; a ``RETRY`` code is retried by the store's ``RetryPolicy``; a
``RECONNECT`` code is retried too, but never on the connection that failed:
it is what a failover looks like from a connection (a server that refuses
writes, shuts down, starts up, or ended the session), so the connection is
closed instead of going back to the pool, and the pool's idle connections,
opened to the same server, are replaced.

At connect time libpq hands over no SQLSTATE, only the text of the server's
refusal (``FATAL:  database "bots" does not exist``). The start-up messages
the server sends are mapped back to the SQLSTATE it raises them with, and
classified by the same table; libpq's own refusals of the DSN (a bad
``sslmode`` or port, a host name that does not exist, a rejected
certificate) cannot change on a retry either. Every connect failure that
cannot succeed on a retry is a configuration error, raised at the first
attempt with what to fix. A message that is not recognised (a server whose
``lc_messages`` is not English, a proxy's own wording) stays transient: an
outage mistaken for a configuration error would stop a bot from starting
during a failover, while the opposite costs one retry budget.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Final

import psycopg

__all__ = ["Verdict", "connect_failure", "is_transient", "needs_new_connection", "verdict"]


class Verdict(enum.Enum):
    """What a failed attempt calls for."""

    #: Another attempt may succeed: the server, the network or a lock is busy.
    RETRY = "retry"
    #: Another attempt may succeed, on another connection: this one's server
    #: refuses writes (a standby, a demoted primary), is shutting down or
    #: starting up, or ended the session. The connection is never reused.
    RECONNECT = "reconnect"
    #: No retry can succeed: the statement, the data, the schema or, at
    #: connect time, the DSN or the server's set-up must change.
    FAIL = "fail"


RETRY, RECONNECT, FAIL = Verdict.RETRY, Verdict.RECONNECT, Verdict.FAIL

#: Codes whose meaning differs from their class's (checked first).
_CODES: Final[Mapping[str, Verdict]] = {
    # What a standby or a demoted primary answers a write with (also "cannot
    # execute ... during recovery"). Once a failover has promoted another
    # server, a new connection (with target_session_attrs=read-write) reaches
    # it; this one, and the pool's others to the same server, never will.
    "25006": RECONNECT,  # read_only_sql_transaction
    # A session the server ended for being idle in a transaction, or for a
    # transaction past transaction_timeout (PostgreSQL 17): a new connection
    # and a new attempt can succeed.
    "25P03": RECONNECT,  # idle_in_transaction_session_timeout
    "25P04": RECONNECT,  # transaction_timeout
    # A deferred constraint that failed at commit: the data, not the moment.
    "40002": FAIL,  # transaction_integrity_constraint_violation
    # The lock was held by another session: lock_timeout ran out, or a NOWAIT
    # lock found it taken. Like statement_timeout (57014), the server gave up
    # waiting; it does not say the statement is wrong. (No statement of this
    # library locks with NOWAIT: leases use SKIP LOCKED and row fences.)
    "55P03": RETRY,  # lock_not_available
    # A limit of the server's configuration (max_locks_per_transaction,
    # max_pred_locks...) is not a passing shortage.
    "53400": FAIL,  # configuration_limit_exceeded
    # A server going away or not yet back: a fast or smart shutdown, a crash
    # of another backend, a server starting up or still replaying WAL. Its
    # sessions end; a retry connects anew, to the promoted server if the
    # DSN lists it.
    "57P01": RECONNECT,  # admin_shutdown (also pg_terminate_backend)
    "57P02": RECONNECT,  # crash_shutdown
    "57P03": RECONNECT,  # cannot_connect_now
    "57P05": RECONNECT,  # idle_session_timeout (PostgreSQL 14)
    # The connection's database was dropped: every reconnection fails too
    # (also what a standby's recovery conflict with a dropped database says).
    "57P04": FAIL,  # database_dropped
    # Files that are missing or in the way are not transient, unlike I/O errors.
    "58P01": FAIL,  # undefined_file
    "58P02": FAIL,  # duplicate_file
    "58P03": FAIL,  # file_name_too_long (PostgreSQL 17)
}

#: Every SQLSTATE class of Appendix A, by its first two characters.
_CLASSES: Final[Mapping[str, Verdict]] = {
    "02": FAIL,  # No Data (a warning class; never raised as an error)
    "03": FAIL,  # SQL Statement Not Yet Complete
    "08": RETRY,  # Connection Exception (PgBouncer's own errors are 08P01)
    "09": FAIL,  # Triggered Action Exception
    "0A": FAIL,  # Feature Not Supported
    "0B": FAIL,  # Invalid Transaction Initiation
    "0F": FAIL,  # Locator Exception
    "0L": FAIL,  # Invalid Grantor
    "0P": FAIL,  # Invalid Role Specification
    "0Z": FAIL,  # Diagnostics Exception
    "10": FAIL,  # XQuery Error
    "20": FAIL,  # Case Not Found
    "21": FAIL,  # Cardinality Violation
    "22": FAIL,  # Data Exception
    "23": FAIL,  # Integrity Constraint Violation
    "24": FAIL,  # Invalid Cursor State
    "25": FAIL,  # Invalid Transaction State
    "26": FAIL,  # Invalid SQL Statement Name
    "27": FAIL,  # Triggered Data Change Violation
    "28": FAIL,  # Invalid Authorization Specification
    "2B": FAIL,  # Dependent Privilege Descriptors Still Exist
    "2D": FAIL,  # Invalid Transaction Termination
    "2F": FAIL,  # SQL Routine Exception
    "34": FAIL,  # Invalid Cursor Name
    "38": FAIL,  # External Routine Exception
    "39": FAIL,  # External Routine Invocation Exception
    "3B": FAIL,  # Savepoint Exception
    "3D": FAIL,  # Invalid Catalog Name
    "3F": FAIL,  # Invalid Schema Name
    # Transaction Rollback: serialization failures and deadlocks, and a hot
    # standby's recovery conflicts ("canceling statement / terminating
    # connection due to conflict with recovery" are 40001, a buffer deadlock
    # with recovery 40P01), after which the session may be ended. A new
    # connection costs one connect, and these are rare at this library's
    # READ COMMITTED single statements.
    "40": RECONNECT,
    "42": FAIL,  # Syntax Error or Access Rule Violation
    "44": FAIL,  # WITH CHECK OPTION Violation
    "53": RETRY,  # Insufficient Resources: too many connections, out of memory, disk full
    "54": FAIL,  # Program Limit Exceeded
    "55": FAIL,  # Object Not In Prerequisite State
    "57": RETRY,  # Operator Intervention: statement_timeout, shutdown, crash, starting up
    "58": RETRY,  # System Error: I/O errors outside PostgreSQL
    "72": FAIL,  # Snapshot Failure
    "F0": FAIL,  # Configuration File Error
    "HV": FAIL,  # Foreign Data Wrapper Error
    "P0": FAIL,  # PL/pgSQL Error
    "XX": FAIL,  # Internal Error: corruption is not fixed by trying again
}


def verdict(sqlstate: str) -> Verdict:
    """The verdict of a SQLSTATE: its own entry, else its class's; ``FAIL`` if unknown."""
    return _CODES.get(sqlstate) or _CLASSES.get(sqlstate[:2], FAIL)


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed where ``exc`` failed one.

    A server error is judged by its SQLSTATE (:func:`verdict`: ``RETRY`` or
    ``RECONNECT``). Without one, an ``OperationalError`` (a lost connection,
    a connection the old primary closed, a pool timeout, a failed connect
    that :func:`connect_failure` does not recognise), an ``InterfaceError``
    and an ``OSError`` are transient; anything else (a value psycopg could
    not adapt, say) is not.
    """
    if isinstance(exc, psycopg.Error):
        if exc.sqlstate is not None:
            return verdict(exc.sqlstate) is not FAIL
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return isinstance(exc, OSError)


def needs_new_connection(exc: BaseException) -> bool:
    """Whether the connection that raised ``exc`` must be closed rather than pooled again.

    True for a ``RECONNECT`` SQLSTATE (:class:`Verdict`). A connection that
    was lost (no SQLSTATE) is broken already, and the pool drops it itself.
    """
    return (
        isinstance(exc, psycopg.Error)
        and exc.sqlstate is not None
        and verdict(exc.sqlstate) is RECONNECT
    )


def _startup(pattern: str, sqlstate: str, fix: str) -> tuple[re.Pattern[str], str, str]:
    return re.compile(pattern, re.IGNORECASE), sqlstate, fix


_OPTIONS_FIX = "fix or remove that setting in the DSN's options (or PGOPTIONS)"

#: What the server says when it refuses a new connection, the SQLSTATE it
#: says it with, and what to fix when that is no passing condition. Matched
#: in order, case-insensitively, against the server's message.
_STARTUP: Final = (
    _startup(
        r"the database system is (starting up|shutting down|in recovery mode|not)", "57P03", ""
    ),
    _startup(
        r"too many connections for|too many clients|connection slots are reserved", "53300", ""
    ),
    _startup(r"terminating connection due to administrator command", "57P01", ""),
    # libpq's own check of target_session_attrs (read-write, primary...) on a
    # server that is not what was asked for: a failover may make it so.
    _startup(r"session is (not )?read-only|server is (not )?in hot standby mode", "25006", ""),
    _startup(r"canceling authentication due to timeout", "57014", ""),
    _startup(
        r'database ".*" does not exist',
        "3D000",
        "fix the database name in the DSN, or create the database",
    ),
    _startup(
        r'role ".*" does not exist', "28000", "fix the user name in the DSN, or create the role"
    ),
    _startup(r"not permitted to log in", "28000", "grant LOGIN to the role, or use another one"),
    _startup(
        r"password authentication failed", "28P01", "fix the user name or password in the DSN"
    ),
    _startup(r"authentication failed", "28000", "fix the user name or credentials in the DSN"),
    _startup(
        r"no pg_hba\.conf entry|pg_hba\.conf rejects",
        "28000",
        "allow this client in the server's pg_hba.conf, or fix the DSN",
    ),
    _startup(
        r"permission denied for database", "42501", "grant CONNECT on the database to the role"
    ),
    _startup(
        r"is not currently accepting connections",
        "55000",
        "allow connections to the database (ALTER DATABASE ... ALLOW_CONNECTIONS true), "
        "or name another one",
    ),
    _startup(r"unrecognized configuration parameter", "42704", _OPTIONS_FIX),
    _startup(
        r"invalid value for parameter|outside the valid range for parameter"
        r"|parameter \".*\" requires an? \w+ value",
        "22023",
        _OPTIONS_FIX,
    ),
    _startup(r"parameter \".*\" cannot be changed", "55P02", _OPTIONS_FIX),
    _startup(r"permission denied to set parameter", "42501", _OPTIONS_FIX),
    _startup(r"requires a value|invalid command-line argument", "42601", _OPTIONS_FIX),
    _startup(r"unsupported frontend protocol", "0A000", "use a newer PostgreSQL server"),
)

#: libpq's (and PgBouncer's) refusals of the DSN or of the client's set-up,
#: which carry no SQLSTATE and cannot change on a retry: (what it says, what to fix).
_CLIENT: Final = (
    ("no password supplied", "put the password in the DSN (or in PGPASSWORD or a passfile)"),
    ("invalid integer value", "fix that option's value in the DSN"),
    ("invalid port number", "use a port from 1 to 65535 in the DSN"),
    (
        "invalid sslmode value",
        "use an sslmode libpq knows (disable, allow, prefer, require, verify-ca, verify-full)",
    ),
    ("invalid connection option", "remove or fix that option in the DSN"),
    ("server does not support ssl", "use an sslmode that the server supports, or enable SSL on it"),
    ("ssl support is not compiled in", "use sslmode=disable, or a libpq built with SSL"),
    ("certificate", "fix the certificates (sslrootcert, sslcert, sslkey) or the sslmode"),
    ("channel binding", "fix channel_binding in the DSN, or the server's authentication"),
    ("authentication method requirement", "fix require_auth in the DSN"),
    ("could not match", "give as many ports (and hostaddrs) as hosts in the DSN"),
    ("could not parse network address", "fix the hostaddr in the DSN"),
    ("name or service not known", "fix the host name in the DSN"),
    ("no address associated with hostname", "fix the host name in the DSN"),
    ("nodename nor servname", "fix the host name in the DSN"),
    # PgBouncer: a startup parameter it does not pass on, an unknown pool.
    (
        "unsupported startup parameter",
        "remove that parameter from the DSN, or list it in PgBouncer's ignore_startup_parameters",
    ),
    ("no such database", "fix the database name in the DSN, or add it to PgBouncer's [databases]"),
    ("bouncer config error", "fix the database name in the DSN, or PgBouncer's [databases] entry"),
    ("no such user", "fix the user name in the DSN, or add it to PgBouncer's auth_file"),
)

# libpq reports each address of a host it tried as "connection to server
# at/on ... failed: <reason>"; psycopg lists the hosts of a multi-host DSN it
# tried after this line, one "- host: ...: <error>" line each.
_ATTEMPT = re.compile(
    r"connection to server (?:at|on socket) .*? failed: (.*?)"
    r"(?=connection to server (?:at|on socket) |\Z)",
    re.DOTALL,
)
_HOSTS = "Multiple connection attempts failed"


def _fix_of(reason: str) -> str | None:
    """What to fix for one address's failure, or None when it is (or may be) transient."""
    for pattern, sqlstate, fix in _STARTUP:
        if pattern.search(reason):
            return fix if verdict(sqlstate) is FAIL else None
    lowered = reason.lower()
    return next((fix for marker, fix in _CLIENT if marker in lowered), None)


def connect_failure(exc: BaseException) -> tuple[str, str] | None:
    """``(reason, what to fix)`` when a failed connect cannot succeed on a retry, else None.

    The reason is the driver's message in one line. When several addresses
    or hosts were tried, the connect is refused for good only if every one of
    them refused it for good: one that was down may be the one that comes back.
    A refused, reset or timed-out connection, a server starting up or
    shutting down (57P03), too many connections (53300), a host name that
    does not resolve *now* ("Temporary failure in name resolution") and any
    message not recognised stay transient.
    """
    if not isinstance(exc, psycopg.OperationalError) or exc.sqlstate is not None:
        return None
    message = str(exc)
    hosts = message.split("\n- ")[1:] if _HOSTS in message else [message]
    # Each address tried, in one line (libpq may repeat one), and what to fix there.
    attempts: dict[str, str | None] = {}
    for host in hosts:
        for text, reason in [(m[0], m[1]) for m in _ATTEMPT.finditer(host)] or [(host, host)]:
            line = " ".join(text.split())
            for prefix in ("connection failed: ", "connection is bad: "):
                line = line.removeprefix(prefix)
            attempts[line] = _fix_of(reason)
    if not attempts or None in attempts.values():
        return None
    fixes = dict.fromkeys(fix for fix in attempts.values() if fix)
    return " | ".join(attempts), "; ".join(fixes)
