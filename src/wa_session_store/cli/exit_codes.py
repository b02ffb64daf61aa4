"""What an operator gets back from ``wa-session-store``: an exit status and, with ``--json``, JSON.

One table gives every condition one exit status, whichever subcommand met it
(:class:`ExitStatus`; docs/cli.md shows the same table). :func:`outcome` maps
whatever a command ended with to its status and a one-line message worded for
the command line, and :func:`print_json` writes the document a ``--json``
command prints when it does not succeed. ``main()`` in ``wa_session_store.cli``
applies them in one place for every subcommand, ``copy`` included.

Messages: the library's errors are worded for Python callers ("pass
``overwrite=True``"). The CLI does not change them; it rewords what reaches an
operator through :data:`FOR_THE_COMMAND_LINE` (option names, environment
variables, subcommands) and redacts every secret. The library's wording stays
as it is for Python users.
"""

from __future__ import annotations

import asyncio
import json
import re
from enum import IntEnum
from typing import Any, ClassVar, Final

from ..errors import (
    InvalidInputError,
    LeaseUnavailableError,
    SchemaVersionError,
    SessionExistsError,
    SessionStoreError,
    StoreConfigurationError,
    StoreUnavailableError,
)
from ..store.redaction import redact_text


class ExitStatus(IntEnum):
    """The exit status of ``wa-session-store``, by condition; ``kind`` names it in JSON."""

    #: Done (``demo``: nothing was lost).
    OK = 0
    #: The operation ran and failed: the store refused a statement, a stored
    #: value could not be decoded or decrypted, a folder could not be read or
    #: written, ``check`` or ``demo`` found a difference, ``copy`` failed a
    #: session; or a bug.
    FAILED = 1
    #: The command line, the DSN or the environment must change: an unknown
    #: option, a malformed URL or session id, bad key variables, a DSN the
    #: server refuses for good (role, password, database, port, sslmode,
    #: host), a folder that cannot be used as given.
    USAGE = 2
    #: What the command names is not there: a session, a SQLite file (for a
    #: command that never creates one), a database without the tables, a folder.
    NOT_FOUND = 3
    #: The store cannot be used now: unreachable after every retry, not
    #: healthy (``status``), or its schema is newer than this library.
    UNAVAILABLE = 4
    #: Nothing was changed because it needs a go-ahead or would conflict:
    #: ``import`` of a stored session (``--overwrite``), ``delete`` not
    #: confirmed (``--yes``), a session held by a live lease, ``copy``
    #: sessions in conflict or refused.
    REFUSED = 5
    #: Interrupted (Ctrl-C); the message says what was left done or undone.
    INTERRUPTED = 130

    @property
    def kind(self) -> str:
        """The name ``--json`` gives it (``error``): ``not_found``, ``refused``..."""
        return self.name.lower()


class CommandError(SessionStoreError):
    """A subcommand cannot go on; :attr:`status` is how the command ends."""

    status: ClassVar[ExitStatus] = ExitStatus.FAILED


class UsageError(CommandError):
    """A command line that cannot be carried out as given (exit status 2)."""

    status = ExitStatus.USAGE


class NotFoundError(CommandError):
    """What the command line names is not there (exit status 3)."""

    status = ExitStatus.NOT_FOUND


class UnavailableError(CommandError):
    """The store cannot be used now: a server that refuses writes, say (exit status 4)."""

    status = ExitStatus.UNAVAILABLE


class RefusedError(CommandError):
    """Refused, nothing changed: it needs a go-ahead or would conflict (exit status 5)."""

    status = ExitStatus.REFUSED


class ArgumentsError(UsageError):
    """argparse refused the command line (it printed the usage already)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


#: The library's Python wording, and the same advice for an operator.
FOR_THE_COMMAND_LINE: Final = (
    ("pass overwrite=True (--overwrite)", "pass --overwrite"),
    ("pass overwrite=True", "pass --overwrite"),
    ("pass force=True (--force)", "pass --force"),
    (
        "open the store with cipher=AESGCMCipher(...) holding that key",
        "give that key in WA_SESSION_STORE_KEYS (for copy's source, WA_SESSION_STORE_SOURCE_KEYS)",
    ),
    (
        "pass allow_plaintext=True to read it while migrating, and run reencrypt() to seal it",
        "seal it with 'wa-session-store reencrypt --allow-plaintext', or read it without "
        "WA_SESSION_STORE_KEYS",
    ),
    ("(wa-session-store migrate, or open with migrate=True)", "(wa-session-store migrate)"),
    ("open it once with migrate=True", "run 'wa-session-store migrate' on it once"),
    (" (or open the store with a higher max_value_size)", ""),
    ("over the store's max_value_size of", "over the store's limit of"),
    (" (raise max_value_size to allow more)", ""),
)

# A schema check that found no schema at all: nothing is stored there.
_NO_SCHEMA: Final = re.compile(r"\bschema version 0\b")

# The first match decides; CommandError carries its own status.
_STATUS_OF: Final[tuple[tuple[type[BaseException], ExitStatus], ...]] = (
    (StoreConfigurationError, ExitStatus.USAGE),  # before StoreOperationError: a subclass
    (InvalidInputError, ExitStatus.USAGE),
    (SessionExistsError, ExitStatus.REFUSED),
    (LeaseUnavailableError, ExitStatus.REFUSED),
    (StoreUnavailableError, ExitStatus.UNAVAILABLE),
    (SchemaVersionError, ExitStatus.UNAVAILABLE),
    (SessionStoreError, ExitStatus.FAILED),
    (OSError, ExitStatus.FAILED),  # a folder that cannot be read or written
)


def for_operator(message: str) -> str:
    """``message`` worded for the command line, without secrets."""
    for python, command_line in FOR_THE_COMMAND_LINE:
        message = message.replace(python, command_line)
    return redact_text(message)


def outcome(exc: BaseException) -> tuple[ExitStatus, str]:
    """The exit status and the one-line message a command that raised ``exc`` ends with."""
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return ExitStatus.INTERRUPTED, "interrupted"
    if isinstance(exc, CommandError):
        return exc.status, for_operator(str(exc))
    if isinstance(exc, SchemaVersionError) and _NO_SCHEMA.search(str(exc)):
        found = for_operator(str(exc))
        return ExitStatus.NOT_FOUND, f"no session store there (is the URL right?): {found}"
    if isinstance(exc, OSError) and not isinstance(exc, SessionStoreError):
        text = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
        return ExitStatus.FAILED, for_operator(text)
    for kind, status in _STATUS_OF:
        if isinstance(exc, kind):
            return status, for_operator(str(exc))
    lines = str(exc).strip().splitlines()
    return ExitStatus.FAILED, (
        f"unexpected {type(exc).__name__}: {for_operator(lines[0] if lines else '')} "
        "(please report this)"
    )


def print_json(document: dict[str, Any], status: ExitStatus, message: str = "") -> None:
    """Print ``document`` for ``--json``, ``ok`` first; unless ``status`` is OK, with
    ``exit_status``, ``error`` (the condition's kind) and ``message`` (one line, no secret).
    """
    shown: dict[str, Any] = {"ok": status == ExitStatus.OK}
    shown.update(document)
    if status != ExitStatus.OK:
        shown.update(exit_status=int(status), error=status.kind, message=message)
    print(json.dumps(shown, indent=2), flush=True)
