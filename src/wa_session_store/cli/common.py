"""What the ``wa-session-store`` subcommands share.

Opening a store from ``--dsn`` or a URL, reading the key variables
(``WA_SESSION_STORE_KEYS``, ``WA_SESSION_STORE_SOURCE_KEYS``), progress on a
terminal, the note printed on Ctrl-C, messages and prompts. How a command ends
(its exit status and errors) is ``_cli_exit``'s. The parser and ``main()`` stay
in ``wa_session_store.cli``, which imports the command modules; they import
this module, never the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import os
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, TextIO

from ..backends.open import DEFAULT_URL, open_store, redact_url
from ..backends.postgres import PostgresStore
from ..backends.sqlite import SQLiteStore
from ..errors import InvalidInputError
from ..store.base import BaseStore, SessionInfo
from ..store.crypto import Cipher
from .exit_codes import NotFoundError, UsageError


class Progress:
    """``label done/total`` rewritten in place on a terminal; silent when stderr is piped."""

    def __init__(self, label: str, *, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int | None = None, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and (total is None or done < total):
            return  # a terminal needs no more than ten updates a second
        self._last = now
        of = f"/{total:,}" if total is not None else ""
        self.stream.write(f"\r{self.label} {done:,}{of}{detail}")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


#: The environment variable holding the target's keys (and every other subcommand's).
KEYS_ENV = "WA_SESSION_STORE_KEYS"
#: The environment variable holding the keys of ``copy``'s source store.
SOURCE_KEYS_ENV = "WA_SESSION_STORE_SOURCE_KEYS"


def _cipher_from_env(variable: str = KEYS_ENV) -> Cipher | None:
    """The cipher described by ``variable`` (``id=base64,id=base64``), if set.

    The first key is the active one unless ``WA_SESSION_STORE_ACTIVE_KEY`` names
    another (for ``WA_SESSION_STORE_KEYS``; a source store only reads, so any key
    of ``WA_SESSION_STORE_SOURCE_KEYS`` will do as its active one). Messages
    name entries by their position, never by what they hold: a malformed entry
    may be a bare key.
    """
    spec = os.environ.get(variable, "").strip()
    if not spec:
        return None
    from ..store.crypto import AESGCMCipher

    keys: dict[str, bytes] = {}
    shape = f"{variable} must look like 'id=BASE64KEY,id2=BASE64KEY'"
    for number, item in enumerate(spec.split(","), 1):
        key_id, sep, encoded = item.strip().partition("=")
        entry = f"entry {number} of {variable}"
        if not sep or not key_id or not encoded:
            raise UsageError(
                f"{entry} is not id=BASE64KEY (it is not shown: it may be a key); {shape}"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{entry}: the key is not valid base64; {shape}") from None
        if len(key) != 32:
            raise UsageError(f"{entry}: the key is {len(key)} bytes, not 32 (AES-256); {shape}")
        try:
            AESGCMCipher({key_id: key}, key_id)
        except InvalidInputError:
            raise UsageError(
                f"{entry}: the id is not allowed (use 1 to 64 of A-Z a-z 0-9 . _ : -); {shape}"
            ) from None
        keys[key_id] = key
    chosen = os.environ.get("WA_SESSION_STORE_ACTIVE_KEY") if variable == KEYS_ENV else None
    active = chosen or next(iter(keys))
    if active not in keys:
        raise UsageError(
            f"WA_SESSION_STORE_ACTIVE_KEY must be the id of one of the keys of {variable} "
            f"({', '.join(keys)}); its value is not, and is not shown"
        )
    return AESGCMCipher(keys, active)


def _store(
    args: argparse.Namespace,
    *,
    url: str | None = None,
    keys_env: str = KEYS_ENV,
    create: bool = False,
    **options: Any,
) -> BaseStore:
    """The store of ``url`` (default ``--dsn``), sealed with the keys of ``keys_env`` if set.

    Unless ``create``, the store must exist already and is left as it is: a
    SQLite file that is not there is a :class:`NotFoundError` naming its path
    (nothing is created), and the schema is neither created nor upgraded
    (``migrate=False``: a database without the tables is not found either).
    Only the commands that set a store up pass ``create``: ``check``,
    ``migrate``, ``import`` and the target of ``copy``.

    A URL the library refuses is a usage error (status 2).
    """
    cipher = _cipher_from_env(keys_env)
    if cipher is not None:
        options.setdefault("cipher", cipher)
    given = args.dsn if url is None else url
    try:
        store = open_store(given, **options)
    except InvalidInputError as exc:  # the URL given on the command line or in the environment
        raise UsageError(f"{'--dsn' if url is None else 'store URL'}: {exc}") from None
    if create:
        return store
    if isinstance(store, SQLiteStore) and not store.path.is_file():
        hint = (
            "pass --dsn URL or set WA_SESSION_STORE_DSN"
            if url is None and given == DEFAULT_URL
            else "check the URL"
        )
        raise NotFoundError(
            f"no SQLite database at {str(store.path.absolute())!r} ({redact_url(given)}): "
            f"nothing was created; {hint}"
        )
    if isinstance(store, (SQLiteStore, PostgresStore)):
        store.migrate = False
    return store


async def _stored_session(store: BaseStore, args: argparse.Namespace) -> SessionInfo:
    """What ``store`` holds for ``args.session``; :class:`NotFoundError` if nothing."""
    for info in await store.list_sessions():
        if info.session_id == args.session:
            return info
    raise NotFoundError(f"no session {args.session!r} in {redact_url(args.dsn)}")


def _ago(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


class _Interrupt:
    """What a command says if it is interrupted (set as it goes; printed by :func:`main`)."""

    note = ""


_INTERRUPT = _Interrupt()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _ask(question: str) -> str | None:
    """Ask on the terminal; the line typed, or None at end of input.

    The line is read on a daemon thread with ``os.read``: a Ctrl-C cancels the
    wait at once (``input()`` in a worker thread would hold the exit until
    Enter), and the thread is left to end with the process.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str | None] = loop.create_future()

    def settle(line: str | None) -> None:
        if not answer.done():
            answer.set_result(line)

    def read() -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except (OSError, ValueError):
            data = b""
        line = data.decode("utf-8", "replace") if data else None
        with contextlib.suppress(RuntimeError):  # the loop is gone: interrupted
            loop.call_soon_threadsafe(settle, line)

    sys.stdout.write(question)
    sys.stdout.flush()
    threading.Thread(target=read, name="wa-session-store-prompt", daemon=True).start()
    return await answer
