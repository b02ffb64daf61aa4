"""The ``wa-session-store`` command (also ``python -m wa_session_store``).

Every subcommand accepts ``--dsn URL`` (before or after its own arguments);
without it the ``WA_SESSION_STORE_DSN`` environment variable is used, and
without that the embedded SQLite file ``wa_sessions.db`` in the current folder.
Every error prints one line to stderr, never a traceback and never a secret;
a ``--json`` command also prints a JSON document with ``"ok": false`` on
stdout, whatever the failure. The exit status says the condition, the same for
every subcommand (``_cli_exit.ExitStatus``: 0 ok, 1 failed, 2 usage, 3 not
found, 4 unavailable, 5 refused, 130 interrupted). All of it is handled in one
place, :func:`main`, so that every subcommand behaves the same.

This module holds the parser, :func:`main` and that handling; the subcommands
live in ``_cli_sessions`` (list, status, show, delete), ``_cli_folders``
(import, export) and ``_cli_maintenance`` (check, migrate, reencrypt, copy,
demo), and what they share in ``_cli_common``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from ..backends.open import DEFAULT_URL, redact_text
from ..errors import InvalidInputError
from ..store.ids import check_session_id
from .common import _INTERRUPT, _say
from .common import KEYS_ENV as KEYS_ENV
from .common import SOURCE_KEYS_ENV as SOURCE_KEYS_ENV
from .common import Progress as Progress
from .exit_codes import ArgumentsError, ExitStatus, outcome, print_json
from .exit_codes import UsageError as UsageError
from .folders import _export, _import
from .maintenance import _check, _copy, _demo, _migrate, _reencrypt
from .sessions import _delete, _list, _show, _status, collect_status

__all__ = ["collect_status", "main"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int >= ``minimum`` (a bad value is a usage error, status 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text[:20]!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {text[:20]}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:20]!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text[:20]!r}")
    return value


_JSON_HELP = 'print JSON; a failure prints {"ok": false, ...} too'


def _parser() -> argparse.ArgumentParser:
    dsn_help = (
        "store URL: sqlite:///path.db, postgresql://..., memory://, or the scheme of an "
        f"installed backend (default: $WA_SESSION_STORE_DSN, else {DEFAULT_URL})"
    )
    # --dsn is accepted before the subcommand and after its arguments; the
    # subcommand's copy has no default so it does not undo the first one.
    common = _Parser(add_help=False)
    common.add_argument("--dsn", default=argparse.SUPPRESS, metavar="URL", help=dsn_help)
    parser = _Parser(
        prog="wa-session-store",
        description="Keep WhatsApp multi-device sessions in PostgreSQL or SQLite.",
        epilog="exit status: "
        + ", ".join(f"{int(s)} {s.kind.replace('_', ' ')}" for s in ExitStatus)
        + '. With --json, a failure prints {"ok": false, "exit_status", "error", '
        '"message"}. Only check, migrate, import, demo and copy\'s target create a store.',
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("WA_SESSION_STORE_DSN", DEFAULT_URL),
        metavar="URL",
        help=dsn_help,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Command, help_: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_, description=description)
        sub.set_defaults(run=run)
        return sub

    command(
        "check",
        _check,
        "connectivity, round-trip latency, schema version, pool settings, a probe write",
        "Open the store (creating or upgrading its schema), time a few reads, show the schema "
        "version, retry and pool settings, then write, read back and delete a probe session.",
    )
    command(
        "migrate",
        _migrate,
        "create or upgrade the schema (as the owner role)",
        "Create or upgrade the tables, then print the schema version. Run it with a role "
        "that may run DDL; bots can then open the store with migrate=False.",
    )
    listing = command(
        "list",
        _list,
        "every stored session: id, last update, keys, size",
        "List every stored session with its last update (UTC), key count and stored size.",
    )
    listing.add_argument("--json", action="store_true", help=_JSON_HELP)
    status = command(
        "status",
        _status,
        "health, and every session's last change, keys, size and lease",
        "Check the store (round trip, schema, server and pool), then list every session with "
        "its last change (UTC), key count, stored size and lease holder and expiry, and name "
        "the sessions that need a look: creds but no keys, or a lease that expired with no "
        "owner. Metadata only, never secrets. Exit status 4 (unavailable) when the store is "
        "not healthy.",
    )
    status.add_argument("--json", action="store_true", help=_JSON_HELP)
    show = command(
        "show",
        _show,
        "metadata of one session (never secrets)",
        "Show one session's metadata: account, pre-key counters, keys per category, size, "
        "lease holder. Never prints a key or creds value.",
    )
    show.add_argument("session", metavar="SESSION", help="the session id")
    importing = command(
        "import",
        _import,
        "import a Baileys multi-file auth folder as a session",
        "Import a folder written by Baileys' useMultiFileAuthState (creds.json and one "
        "file per key) as one session, in one transaction. Unknown files are reported.",
    )
    importing.add_argument("folder", metavar="DIR", help="the Baileys auth folder")
    importing.add_argument("--session", required=True, metavar="ID", help="the session id")
    importing.add_argument(
        "--overwrite", action="store_true", help="replace the session if it is already stored"
    )
    exporting = command(
        "export",
        _export,
        "write a session as a Baileys multi-file auth folder",
        "Write a stored session as creds.json and one file per key, with Baileys' file names.",
    )
    exporting.add_argument("session", metavar="SESSION", help="the session id")
    exporting.add_argument("folder", metavar="DIR", help="the folder to write (created if missing)")
    deleting = command(
        "delete",
        _delete,
        "delete a session's creds and keys (asks first)",
        "Delete a session's creds and every key, atomically. Asks for confirmation on a "
        "terminal; elsewhere pass --yes.",
    )
    deleting.add_argument("session", metavar="SESSION", help="the session id")
    deleting.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    reencrypting = command(
        "reencrypt",
        _reencrypt,
        "seal every row with the active encryption key (key rotation)",
        "Rewrite every row not sealed with the active key of WA_SESSION_STORE_KEYS "
        "('id=BASE64,id2=BASE64'; the first, or WA_SESSION_STORE_ACTIVE_KEY, is active), in "
        "batches; resumable. With --allow-plaintext, unencrypted rows are sealed too.",
    )
    reencrypting.add_argument(
        "--allow-plaintext", action="store_true", help="also seal rows stored unencrypted"
    )
    reencrypting.add_argument(
        "--batch-size",
        type=_whole(1),
        default=500,
        metavar="N",
        help="rows per batch (default 500)",
    )
    copying = commands.add_parser(
        "copy",
        help="copy sessions between stores, verified and resumable",
        description="Copy sessions (every session of the source when none is named) from one "
        "store to another, each in one transaction on the target, then read each back and "
        "compare it with the source, creds and every key. A session the target holds already "
        "is compared, type for type: identical, it is skipped (so an interrupted copy just "
        "runs again); different, it is reported and left alone unless --overwrite. A session "
        "held by a live lease on the source is refused unless --force: stop the bot, copy, "
        "then point the bot at the target. A session held by a live lease on the target is "
        "always refused, with or without --overwrite and --force. Keys: the source's from "
        f"{SOURCE_KEYS_ENV}, the target's from "
        f"{KEYS_ENV} ('id=BASE64,id2=BASE64'), never from the command line. The source is "
        "never written. Exit status 0 when every session is on the target as on the source, "
        "1 when one failed, else 5 when one was in conflict or refused.",
    )
    copying.add_argument(
        "sessions", nargs="*", metavar="SESSION", help="the sessions to copy (default: all)"
    )
    copying.add_argument(
        "--from", dest="source", required=True, metavar="URL", help="the store to copy from"
    )
    copying.add_argument(
        "--to", dest="target", required=True, metavar="URL", help="the store to copy to"
    )
    copying.add_argument(
        "--overwrite",
        action="store_true",
        help="replace sessions the target holds with different contents (unless leased there)",
    )
    copying.add_argument(
        "--force",
        action="store_true",
        help="copy sessions held by a live lease on the source (never on the target)",
    )
    copying.add_argument(
        "--verify-only",
        action="store_true",
        help="write nothing: compare every session with the target's copy",
    )
    copying.add_argument("--json", action="store_true", help=_JSON_HELP)
    copying.set_defaults(run=_copy)
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="simulate a bot: pair, storm of updates, redeploy, check that nothing was lost",
        description="Simulate a WhatsApp bot on the store: pair a new session 'demo-bot' "
        "(replacing a previous demo run), upload 812 pre-keys, send a storm of creds updates "
        "and Signal key writes through the throttle, stop gracefully, then restore every "
        "session in a new process and check that the demo session came back as the bot left "
        "it. Prints measured figures, never key or creds content. Other sessions in the store "
        "are read, never written. Exit status 0 if nothing was lost, 1 otherwise.",
    )
    demo.add_argument(
        "--updates",
        type=_whole(0),
        default=5000,
        metavar="N",
        help="creds updates during the storm (default: %(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="seconds the storm is spread over (default: %(default)s)",
    )
    demo.add_argument(
        "--throttle",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="at most one creds save per this many seconds (default: %(default)s)",
    )
    demo.set_defaults(run=_demo)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, but its error messages never repeat a secret.

    A key=value ``--dsn`` left unquoted reaches argparse as several words, and
    argparse would echo ``password=...`` back as an unrecognized argument.
    """

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            words = message[len(prefix) :].split()
            shown = [w for w in words if w.startswith("-") and "=" not in w]
            hidden = len(words) - len(shown)
            message = prefix + " ".join(shown)
            if hidden:
                message += (
                    f"{' and ' if shown else ''}{hidden} other word(s), not shown as they may "
                    "hold a secret (quote a key=value --dsn as one argument)"
                )
        # Raised, not exited: main() ends every failure the same way (--json included).
        self.print_usage(sys.stderr)
        raise ArgumentsError(self.prog, redact_text(message))


async def _run(run: Command, args: argparse.Namespace) -> int:
    """Run a command; Ctrl-C cancels it (each time), on every Python version."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    named = getattr(args, "sessions", None) or []
    for session in [getattr(args, "session", None), *named]:
        if session is not None:
            try:
                check_session_id(session)
            except InvalidInputError as exc:
                raise UsageError(str(exc)) from None
    no_signals = (NotImplementedError, RuntimeError, ValueError)  # Windows, a non-main thread
    with contextlib.suppress(*no_signals):
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        return await run(args)
    finally:
        with contextlib.suppress(*no_signals):
            loop.remove_signal_handler(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (see ``_cli_exit.ExitStatus``).

    Every failure ends here, whatever the subcommand: one line on stderr,
    never a traceback and never a secret, the status of its condition, and,
    when ``--json`` was asked for, a JSON document with ``"ok": false`` on
    stdout (even when the command line itself was refused).
    """
    _INTERRUPT.note = ""
    words = list(sys.argv[1:] if argv is None else argv)
    options = words[: words.index("--")] if "--" in words else words
    try:
        args = _parser().parse_args(words)
        run: Command = args.run
        return int(asyncio.run(_run(run, args)))
    except BrokenPipeError:
        # The reader went away (`| head`): not an error; keep Python from
        # complaining again when it flushes stdout at exit.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return ExitStatus.OK
    except ArgumentsError as exc:  # argparse printed the usage already
        status, message = exc.status, str(exc)
        _say(f"{exc.prog}: error: {message}")
    except (Exception, KeyboardInterrupt, asyncio.CancelledError) as exc:
        status, message = outcome(exc)
        if status == ExitStatus.INTERRUPTED:
            message += f": {_INTERRUPT.note}" if _INTERRUPT.note else ""
            _say(f"\n{message}")
        else:
            _say(f"error: {message}")
    if any(w.startswith("--j") and "--json".startswith(w) for w in options):  # or abbreviated
        print_json({}, status, message)
    return int(status)
