"""The ``wa-session-store`` command (also ``python -m wa_session_store``).

Every subcommand accepts ``--dsn URL`` (before or after its own arguments);
without it the ``WA_SESSION_STORE_DSN`` environment variable is used, and
without that the embedded SQLite file ``wa_sessions.db`` in the current folder.
User errors print one line to stderr and exit with status 2 (bad usage) or 1
(the store failed); no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ._open import DEFAULT_URL, open_store, redact_url
from .errors import SessionStoreError
from .store import BaseStore

__all__ = ["main"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


async def _check(args: argparse.Namespace) -> int:
    """Open the store, write a probe session, read it back, delete it."""
    probe = "__wa_session_store_check__"
    creds = {"registrationId": 1, "noiseKey": {"public": os.urandom(32)}}
    keys = {"pre-key": {str(i): {"public": os.urandom(33)} for i in range(1, 4)}}
    async with _store(args) as store:
        started = time.perf_counter()
        await store.save_creds(probe, creds)
        await store.set_keys(probe, keys)
        loaded = await store.load_creds(probe)
        got = await store.get_keys(probe, "pre-key", list(keys["pre-key"]))
        await store.delete_session(probe)
        elapsed = (time.perf_counter() - started) * 1000
    if loaded != creds or got != keys["pre-key"]:
        print(f"FAILED: {store!r} did not give back what was written", file=sys.stderr)
        return 1
    print(f"ok: {redact_url(args.dsn)} wrote and read back creds and 3 keys in {elapsed:.1f} ms")
    return 0


async def _demo(args: argparse.Namespace) -> int:
    """Run the demo (see :mod:`wa_session_store.demo`); 0 if nothing was lost, else 1."""
    from .demo import run_demo

    report = await run_demo(
        args.dsn, updates=args.updates, throttle=args.throttle, duration=args.duration
    )
    return 0 if report.nothing_lost else 1


def _store(args: argparse.Namespace) -> BaseStore:
    return open_store(args.dsn)


def _parser() -> argparse.ArgumentParser:
    dsn_help = (
        "store URL: sqlite:///path.db, postgresql://..., memory:// "
        f"(default: $WA_SESSION_STORE_DSN, else {DEFAULT_URL})"
    )
    # --dsn is accepted before the subcommand and after its arguments; the
    # subcommand's copy has no default so it does not undo the first one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dsn", default=argparse.SUPPRESS, metavar="URL", help=dsn_help)
    parser = argparse.ArgumentParser(
        prog="wa-session-store",
        description="Keep WhatsApp multi-device sessions in PostgreSQL or SQLite.",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("WA_SESSION_STORE_DSN", DEFAULT_URL),
        metavar="URL",
        help=dsn_help,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check",
        parents=[common],
        help="write, read back and delete a probe session; print a one-line verdict",
        description="Open the store (creating its schema), write a probe session, read it "
        "back, delete it, and print a one-line verdict.",
    )
    check.set_defaults(run=_check)
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
        type=int,
        default=5000,
        metavar="N",
        help="creds updates during the storm (default: %(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="seconds the storm is spread over (default: %(default)s)",
    )
    demo.add_argument(
        "--throttle",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="at most one creds save per this many seconds (default: %(default)s)",
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    run: Command = args.run
    try:
        return asyncio.run(run(args))
    except SessionStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
