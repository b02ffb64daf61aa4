"""The exception tree.

Every error this library raises on purpose is a :class:`SessionStoreError`.
Errors caused by bad arguments are also the matching builtin
(:class:`ValueError` or :class:`TypeError`), so existing ``except`` clauses
keep working. Driver exceptions never escape raw: they are wrapped with
``raise ... from exc`` and stay reachable as ``__cause__``.

No message built here contains a credential, a key value or a DSN password:
messages name sessions, categories, key ids and operations only.
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "CredsConflictError",
    "DecodeError",
    "DecryptionError",
    "InvalidInputError",
    "InvalidTypeError",
    "LeaseLostError",
    "LeaseUnavailableError",
    "SchemaVersionError",
    "SessionExistsError",
    "SessionStoreError",
    "StoreClosedError",
    "StoreConfigurationError",
    "StoreOperationError",
    "StoreUnavailableError",
]


class SessionStoreError(Exception):
    """Root of every error raised by wa_session_store."""

    __module__ = "wa_session_store"


class InvalidInputError(SessionStoreError, ValueError):
    """An argument was refused before anything was written.

    The message says what was wrong and what is allowed. Stored data is
    untouched when this is raised.
    """

    __module__ = "wa_session_store"


class InvalidTypeError(InvalidInputError, TypeError):
    """An argument had a type that is not allowed (also a :class:`TypeError`)."""

    __module__ = "wa_session_store"


class StoreClosedError(SessionStoreError, RuntimeError):
    """The store (or throttler, or auth state) is not open, or already closed."""

    __module__ = "wa_session_store"


class SessionExistsError(SessionStoreError):
    """An import would overwrite a stored session; pass ``overwrite=True`` to allow it."""

    __module__ = "wa_session_store"


class LeaseUnavailableError(SessionStoreError):
    """Another live owner holds the session's lease, and waiting did not help.

    Attributes:
        session_id: the session.
        holder: the owner holding the lease.
        expires_at: when the holder's lease expires unless renewed (UTC).
    """

    __module__ = "wa_session_store"

    def __init__(self, session_id: str, holder: str, expires_at: datetime) -> None:
        self.session_id = session_id
        self.holder = holder
        self.expires_at = expires_at
        super().__init__(
            f"session {session_id!r} is leased to {holder!r} until "
            f"{expires_at.isoformat(timespec='seconds')}"
        )


class LeaseLostError(SessionStoreError):
    """The lease is no longer the newest for its session: someone else holds it now.

    A write fenced by the lost lease did not land.

    Attributes:
        session_id: the session.
        token: the lost lease's fencing token.
        holder: the owner of the newest lease, or None if none is recorded.
        holder_token: the newest token, or None.
    """

    __module__ = "wa_session_store"

    def __init__(
        self, session_id: str, token: int, holder: str | None, holder_token: int | None
    ) -> None:
        self.session_id = session_id
        self.token = token
        self.holder = holder
        self.holder_token = holder_token
        now = f"now held by {holder!r} (token {holder_token})" if holder else "no lease recorded"
        super().__init__(
            f"lease token {token} of session {session_id!r} was replaced: {now}; "
            "the write did not land"
        )


class StoreOperationError(SessionStoreError):
    """The database refused an operation for a reason that a retry cannot fix.

    Examples: a permission error, a missing table, a constraint violation. The
    message carries the server's primary message (never the values involved);
    the driver exception is ``__cause__``.
    """

    __module__ = "wa_session_store"


class StoreConfigurationError(StoreOperationError):
    """The store cannot work as configured, and no retry can change that.

    Raised by ``open()`` at the first attempt, for example when PostgreSQL
    refuses the role, the password or the database, when the DSN holds a bad
    port or ``sslmode``, or when the host name does not resolve. The message
    gives the server's (or the driver's) reason in one line and says what to
    fix; it never holds a password. A subclass of :class:`StoreOperationError`,
    so existing ``except`` clauses keep working.
    """

    __module__ = "wa_session_store"


class CredsConflictError(StoreOperationError):
    """A creds save did not land: the store holds creds of a version it may not replace.

    Creds versions are taken from the clock of the process that saves, and a
    save only replaces an older version, so that a late retry never replaces
    a newer save. A save meets a version it may not replace when another
    process saved the session with a clock running ahead (or saved it at the
    same moment). Nothing the save wrote stands (when a retried attempt met
    the other save, the attempt whose answer was lost may have landed and been
    replaced at once); retrying the same call cannot help,
    hence a :class:`StoreOperationError`. The store now knows the stored
    version, so its next save of the session is versioned above it and lands:
    load the creds (or keep the process's own, newer document) and save again.
    A save overtaken by a later save of the same store is not a conflict.

    Attributes:
        session_id: the session.
        version: the version of the save that did not land.
        stored_version: the version the store holds, or None if the session's
            creds were deleted meanwhile.
    """

    __module__ = "wa_session_store"

    def __init__(self, session_id: str, version: int, stored_version: int | None) -> None:
        self.session_id = session_id
        self.version = version
        self.stored_version = stored_version
        if stored_version is None:
            held = "its creds were deleted while it was being saved"
        elif stored_version == version:
            held = "the store holds other creds of the same version"
        else:
            ahead = (stored_version - version) / 1e9
            held = (
                f"the store holds creds versioned {ahead:,.3f} s after this save, written by "
                "another process (or one whose clock runs ahead)"
            )
        super().__init__(
            f"save_creds for session {session_id!r} did not land: {held}; nothing it "
            "wrote stands (an attempt whose answer was lost may have landed and been "
            "replaced). The next save is versioned above the stored creds: save again to "
            "replace them (load_creds first to see them)"
        )


class StoreUnavailableError(SessionStoreError):
    """Every attempt of an operation failed with a transient error.

    Attributes:
        operation: the store method, e.g. ``"save_creds"``.
        session_id: the session concerned, or ``None`` for store-wide calls.
        attempts: how many attempts were made.
        elapsed: seconds spent on the call, waits included.

    The last failure is ``__cause__``.
    """

    __module__ = "wa_session_store"

    def __init__(
        self,
        operation: str,
        session_id: str | None,
        attempts: int,
        elapsed: float,
        cause: BaseException | None,
    ) -> None:
        self.operation = operation
        self.session_id = session_id
        self.attempts = attempts
        self.elapsed = elapsed
        target = f" for session {session_id!r}" if session_id is not None else ""
        reason = describe_error(cause) if cause is not None else "unknown error"
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"{operation}{target} failed after {attempts} {plural} in {elapsed:.1f}s: {reason}"
        )


class SchemaVersionError(SessionStoreError):
    """The database schema is newer than this library, or was not migrated.

    Upgrade wa_session_store, or run the migrations (``open(migrate=True)``)
    with a role that may run DDL.
    """

    __module__ = "wa_session_store"


class DecodeError(SessionStoreError):
    """A stored value could not be decoded (corrupt, or written by something else)."""

    __module__ = "wa_session_store"


class DecryptionError(DecodeError):
    """A sealed value could not be opened, or a value's encryption is not what the store expects.

    Raised for a wrong or unknown key, a tampered ciphertext, a row copied to
    another session or key, an encrypted row met by a store without a cipher,
    and a plaintext row met by a store with one (unless ``allow_plaintext``).
    Never garbage, never a silent ``None``.
    """

    __module__ = "wa_session_store"


def shown(value: object, limit: int = 40) -> str:
    """A short ``repr`` of a refused argument, for a message: never raises, never long.

    Ints too big for ``repr`` (Python's int-to-str digit limit) are described
    by their size; other reprs are cut to ``limit`` characters. Only for
    values that are not secrets (sizes, counts, seconds, names).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an int of {value.bit_length():,} bits"
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__, or any other failure to show the value
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def describe_error(exc: BaseException) -> str:
    """A one-line description of ``exc`` that is safe to log.

    Driver messages describe connections and statements, never parameters;
    the text is cut to one line so that a multi-line server detail (which may
    quote a value) is left out.
    """
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    name = type(exc).__name__
    return f"{name}: {first}" if first else name
