"""The ``wa-session-store`` command (also ``python -m wa_session_store``).

Every subcommand accepts ``--dsn URL`` (before or after its own arguments);
without it the ``WA_SESSION_STORE_DSN`` environment variable is used, and
without that the embedded SQLite file ``wa_sessions.db`` in the current folder.
Every error prints one line to stderr, never a traceback and never a secret.
Exit status: 0 done, 1 the operation failed, 2 bad usage (the command line,
the DSN or the key variables), 130 interrupted (Ctrl-C). All of it is handled
in one place, :func:`main`, so that every subcommand behaves the same.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn, TextIO

from ._codec import check_session_id
from ._open import DEFAULT_URL, open_store, redact_text, redact_url
from .backends.postgres import PostgresStore
from .backends.sqlite import SQLiteStore
from .crypto import Cipher
from .errors import (
    InvalidInputError,
    SessionStoreError,
    StoreConfigurationError,
    StoreUnavailableError,
)
from .store import BaseStore

__all__ = ["collect_status", "main"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class UsageError(SessionStoreError):
    """A command line that cannot be carried out as given (exit status 2)."""


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
    from .crypto import AESGCMCipher

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


def _store(
    args: argparse.Namespace, *, url: str | None = None, keys_env: str = KEYS_ENV, **options: Any
) -> BaseStore:
    """The store of ``url`` (default ``--dsn``), sealed with the keys of ``keys_env`` if set.

    A URL the library refuses is a usage error (status 2).
    """
    cipher = _cipher_from_env(keys_env)
    if cipher is not None:
        options.setdefault("cipher", cipher)
    try:
        return open_store(args.dsn if url is None else url, **options)
    except InvalidInputError as exc:  # the URL given on the command line or in the environment
        raise UsageError(f"{'--dsn' if url is None else 'store URL'}: {exc}") from None


def _existing_store(args: argparse.Namespace, url: str, keys_env: str) -> BaseStore:
    """The store of ``url``, which must exist already: opening it never creates or migrates it."""
    store = _store(args, url=url, keys_env=keys_env)
    if isinstance(store, SQLiteStore) and not store.path.exists():
        raise UsageError(f"no SQLite database at {str(store.path)!r} ({redact_url(url)})")
    if isinstance(store, (SQLiteStore, PostgresStore)):
        store.migrate = False
    return store


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


async def _check(args: argparse.Namespace) -> int:
    """Connectivity, round-trip latency, schema version, pool settings; then a probe write."""
    probe = "__wa_session_store_check__"
    creds = {"registrationId": 1, "noiseKey": {"public": os.urandom(32)}}
    keys = {"pre-key": {str(i): {"public": os.urandom(33)} for i in range(1, 4)}}
    started = time.perf_counter()
    async with _store(args) as store:
        opened = (time.perf_counter() - started) * 1000
        latencies = []
        for _ in range(5):
            begun = time.perf_counter()
            await store.load_creds(probe)
            latencies.append((time.perf_counter() - begun) * 1000)
        version = await store.schema_version()
        begun = time.perf_counter()
        await store.save_creds(probe, creds)
        await store.set_keys(probe, keys)
        loaded = await store.load_creds(probe)
        got = await store.get_keys(probe, "pre-key", list(keys["pre-key"]))
        await store.delete_session(probe)
        probed = (time.perf_counter() - begun) * 1000
    if loaded != creds or got != keys["pre-key"]:
        print(f"FAILED: {store!r} did not give back what was written", file=sys.stderr)
        return 1
    print(f"store:        {redact_url(args.dsn)} ({store.kind})")
    print(f"connected:    in {opened:.1f} ms")
    print(
        f"round trip:   {statistics.median(latencies):.2f} ms median, "
        f"{min(latencies):.2f} ms best (5 reads)"
    )
    print(f"schema:       version {version if version is not None else 'n/a'}")
    policy = store.retry
    print(
        f"retry:        {policy.attempts} attempts of {policy.timeout:g} s, "
        f"backoff {policy.backoff:g} s (budget {policy.budget:g} s)"
    )
    if isinstance(store, PostgresStore):
        stats = store.pool.get_stats()
        print(
            f"pool:         min {store.pool.min_size}, max {store.pool.max_size}, "
            f"{stats.get('pool_size', 0)} open"
        )
    print(
        f"encryption:   {'on, active key ' + repr(store.cipher.active) if store.cipher else 'off'}"
    )
    print(f"ok: wrote and read back creds and 3 keys in {probed:.1f} ms")
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the schema (run it as the owner role)."""
    _INTERRUPT.note = "each schema step is one transaction; run migrate again to finish"
    async with _store(args, migrate=True) as store:
        version = await store.schema_version()
    print(f"schema of {redact_url(args.dsn)} is at version {version}")
    return 0


async def _list(args: argparse.Namespace) -> int:
    """Every stored session: id, last update, keys, size."""
    async with _store(args) as store:
        sessions = await store.list_sessions()
    if args.json:
        rows = [
            {
                "session": info.session_id,
                "updated_at": info.updated_at.isoformat(),
                "keys": info.key_count,
                "creds": info.has_creds,
                "size": info.size,
            }
            for info in sessions
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not sessions:
        print("no sessions stored")
        return 0
    width = max(len("SESSION"), *(len(info.session_id) for info in sessions))
    print(f"{'SESSION':<{width}}  {'UPDATED (UTC)':<19}  {'KEYS':>7}  {'SIZE':>10}")
    for info in sessions:
        name = info.session_id if info.has_creds else f"{info.session_id}"
        print(
            f"{name:<{width}}  {_ago(info.updated_at)}  {info.key_count:>7,}  "
            f"{_size(info.size):>10}" + ("" if info.has_creds else "  (no creds: not paired)")
        )
    print(f"{len(sessions)} session{'s' if len(sessions) != 1 else ''}")
    return 0


async def collect_status(store: BaseStore) -> dict[str, Any]:
    """What ``wa-session-store status`` reports, as a JSON-ready dict.

    ``health`` (see :meth:`BaseStore.health`), then per session its last
    change, key count, stored size, creds flag and lease (PostgreSQL: owner,
    token, expiry, whether it expired), and two lists an operator checks
    after a deploy: ``creds_without_keys`` (paired, yet no Signal key stored)
    and ``expired_leases`` (a lease that expired and nobody took over: no
    worker runs that session). Metadata only, never a key or creds value.
    """
    health = await store.health()
    sessions = await store.list_sessions()
    leases = (
        {info.session_id: info for info in await store.list_leases()}
        if isinstance(store, PostgresStore)
        else {}
    )
    rows: list[dict[str, Any]] = []
    for info in sessions:
        lease = leases.get(info.session_id)
        rows.append(
            {
                "session": info.session_id,
                "updated_at": info.updated_at.isoformat(),
                "creds": info.has_creds,
                "keys": info.key_count,
                "size": info.size,
                "lease": None
                if lease is None
                else {
                    "owner": lease.owner,
                    "token": lease.token,
                    "expires_at": lease.expires_at.isoformat(),
                    "expired": lease.expired,
                },
            }
        )
    return {
        "health": health.as_dict(),
        "sessions": rows,
        "creds_without_keys": [r["session"] for r in rows if r["creds"] and not r["keys"]],
        "expired_leases": [
            r["session"] for r in rows if r["creds"] and r["lease"] and r["lease"]["expired"]
        ],
    }


async def _status(args: argparse.Namespace) -> int:
    """Health, then every session: last change, keys, size, lease; and what needs a look."""
    async with _store(args) as store:
        report = await collect_status(store)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["health"]["ok"] else 1
    health = report["health"]
    state = "ok" if health["ok"] else f"NOT OK: {health['error']}"
    rtt = health["round_trip_ms"]
    print(
        f"store:    {redact_url(args.dsn)} ({health['backend']}) {state}"
        + (f", round trip {rtt:.2f} ms" if rtt is not None else "")
    )
    rows = report["sessions"]
    if rows:
        width = max(len("SESSION"), *(len(r["session"]) for r in rows))
        print(f"{'SESSION':<{width}}  {'UPDATED (UTC)':<19}  {'KEYS':>7}  {'SIZE':>10}  LEASE")
        for r in rows:
            lease = r["lease"]
            held = "-"
            if lease is not None:
                until = _ago(datetime.fromisoformat(lease["expires_at"]))
                held = f"{lease['owner']} {'expired' if lease['expired'] else 'until'} {until}"
            updated = _ago(datetime.fromisoformat(r["updated_at"]))
            print(
                f"{r['session']:<{width}}  {updated}  {r['keys']:>7,}  {_size(r['size']):>10}  "
                f"{held}" + ("" if r["creds"] else "  (no creds: not paired)")
            )
    print(f"{len(rows)} session{'s' if len(rows) != 1 else ''}")
    for label, key in (
        ("with creds but no keys", "creds_without_keys"),
        ("whose lease expired with no owner", "expired_leases"),
    ):
        if report[key]:
            print(f"{len(report[key])} {label}: {', '.join(report[key])}")
    return 0 if health["ok"] else 1


async def _show(args: argparse.Namespace) -> int:
    """Metadata of one session; never a key or creds value."""
    async with _store(args) as store:
        exported = await store.export_session(args.session)
        info = next((i for i in await store.list_sessions() if i.session_id == args.session), None)
        holder = (
            await store.lease_holder(args.session) if isinstance(store, PostgresStore) else None
        )
    if exported is None or info is None:
        raise UsageError(f"no session {args.session!r} in {redact_url(args.dsn)}")
    creds = exported.creds or {}
    me = creds.get("me") if isinstance(creds.get("me"), dict) else None
    rows: list[tuple[str, object]] = [
        ("session", args.session),
        ("updated", f"{_ago(info.updated_at)} UTC"),
        ("creds", "stored" if exported.creds is not None else "none (not paired)"),
    ]
    if me and isinstance(me.get("id"), str):
        rows.append(("account", me["id"]))
    for name in ("registered", "nextPreKeyId", "firstUnuploadedPreKeyId", "platform"):
        if name in creds and isinstance(creds[name], (bool, int, str, type(None))):
            rows.append((name, creds[name]))
    rows.append(("keys", f"{info.key_count:,} ({_size(info.size)} with creds)"))
    rows += [
        (f"  {category}", f"{len(entries):,}")
        for category, entries in sorted(exported.keys.items())
    ]
    if holder is not None:
        owner, token, expires_at = holder
        rows.append(("lease", f"{owner} (token {token}, expires {_ago(expires_at)} UTC)"))
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        print(f"{label + ':':<{width}}{value}")
    return 0


async def _import(args: argparse.Namespace) -> int:
    """Import a Baileys multi-file auth folder as one session, atomically.

    A Ctrl-C while the folder is read imports nothing. Once every file is read
    the session is written in one transaction: a Ctrl-C then lets that
    transaction finish and says that it landed (a second Ctrl-C abandons it,
    and says that it may or may not have landed).
    """
    from .interop.baileys import import_baileys_folder

    progress = Progress(f"reading {args.folder}")
    read_all = False

    def track(done: int, total: int) -> None:
        nonlocal read_all
        read_all = done >= total
        progress(done, total)

    async with _store(args) as store:
        task = asyncio.ensure_future(
            import_baileys_folder(
                store, args.session, args.folder, overwrite=args.overwrite, progress=track
            )
        )
        try:
            report = await asyncio.shield(task)
        except asyncio.CancelledError:
            progress.done()
            if not read_all:
                task.cancel()
                await asyncio.wait([task])
                _INTERRUPT.note = "nothing was imported"
                raise
            _say(
                f"interrupted while session {args.session!r} was being written: letting the "
                "write finish (it is all-or-nothing; Ctrl-C again to abandon it)"
            )
            try:
                report = await asyncio.shield(task)
            except asyncio.CancelledError:
                task.cancel()
                await asyncio.wait([task])
                _INTERRUPT.note = (
                    f"the write was abandoned: session {args.session!r} may or may not have "
                    "been imported; check with 'wa-session-store show'"
                )
                raise
            _INTERRUPT.note = f"the import had landed: {report.summary()}"
            raise
    progress.done()
    print(report.summary())
    return 0


async def _export(args: argparse.Namespace) -> int:
    """Write a session as a Baileys multi-file auth folder."""
    from .interop.baileys import export_baileys_folder

    progress = Progress(f"writing {args.folder}")
    _INTERRUPT.note = f"what was written to {args.folder} has been removed"
    async with _store(args) as store:
        report = await export_baileys_folder(store, args.session, args.folder, progress=progress)
    progress.done()
    print(report.summary())
    return 0


async def _delete(args: argparse.Namespace) -> int:
    """Delete a session's creds and keys, after confirmation."""
    async with _store(args) as store:
        info = next((i for i in await store.list_sessions() if i.session_id == args.session), None)
        if info is None:
            raise UsageError(f"no session {args.session!r} in {redact_url(args.dsn)}")
        if not args.yes:
            if sys.stdin is None or sys.stdin.closed or not sys.stdin.isatty():
                raise UsageError("refusing to delete without confirmation: pass --yes")
            _INTERRUPT.note = "nothing deleted"
            answer = await _ask(
                f"Delete session {args.session!r} ({'creds and ' if info.has_creds else ''}"
                f"{info.key_count:,} keys)? This cannot be undone. [y/N] ",
            )
            if answer is None:
                print()
                _say("no answer (end of input): nothing deleted")
                return 1
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
            _INTERRUPT.note = ""
        await store.delete_session(args.session)
    print(f"deleted session {args.session!r}")
    return 0


async def _reencrypt(args: argparse.Namespace) -> int:
    """Seal every row with the active key of WA_SESSION_STORE_KEYS."""
    if _cipher_from_env() is None:
        raise UsageError(
            "reencrypt needs WA_SESSION_STORE_KEYS='new=BASE64,old=BASE64' "
            "(the first, or WA_SESSION_STORE_ACTIVE_KEY, is the active key)"
        )
    progress = Progress("rows checked")
    _INTERRUPT.note = "every batch sealed so far stays sealed; run reencrypt again to resume"
    async with _store(args, allow_plaintext=args.allow_plaintext) as store:
        result = await store.reencrypt(
            batch_size=args.batch_size, progress=lambda p: progress(p.scanned)
        )
    progress.done()
    print(f"checked {result.scanned:,} rows, sealed {result.rewritten:,} with the active key")
    return 0


async def _copy(args: argparse.Namespace) -> int:
    """Copy sessions from --from to --to, verifying each; resumable. 1 unless all are there."""
    from .transfer import CopyProgress, copy_sessions

    if args.source == args.target:
        raise UsageError("--from and --to name the same store")
    source = _existing_store(args, args.source, SOURCE_KEYS_ENV)
    if args.verify_only:
        target = _existing_store(args, args.target, KEYS_ENV)
    else:
        target = _store(args, url=args.target)
    progress = Progress("verifying" if args.verify_only else "copying")

    def show(p: CopyProgress) -> None:
        progress(
            p.sessions_done, p.sessions_total, f" sessions, {p.keys_done:,}/{p.keys_total:,} keys"
        )

    async with source, target:
        try:
            report = await copy_sessions(
                source,
                target,
                args.sessions or None,
                overwrite=args.overwrite,
                force=args.force,
                verify_only=args.verify_only,
                progress=show,
            )
        except (asyncio.CancelledError, StoreUnavailableError):
            progress.done()
            print(
                "the copy stopped: run the same command again to finish it "
                "(sessions already on the target are compared and skipped)",
                file=sys.stderr,
            )
            raise
    progress.done()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for outcome in report.sessions:
            if outcome.detail and outcome.status != "skipped":
                print(f"{outcome.session_id}: {outcome.status}: {outcome.detail}")
        print(report.summary())
    if any(o.error == "DecryptionError" for o in report.sessions):
        print(
            f"hint: the source's keys come from {SOURCE_KEYS_ENV}, the target's from {KEYS_ENV}",
            file=sys.stderr,
        )
    return 0 if report.ok else 1


async def _demo(args: argparse.Namespace) -> int:
    """Run the demo (see :mod:`wa_session_store.demo`); 0 if nothing was lost, else 1."""
    from .demo import run_demo

    report = await run_demo(
        args.dsn, updates=args.updates, throttle=args.throttle, duration=args.duration
    )
    return 0 if report.nothing_lost else 1


def _parser() -> argparse.ArgumentParser:
    dsn_help = (
        "store URL: sqlite:///path.db, postgresql://..., memory:// "
        f"(default: $WA_SESSION_STORE_DSN, else {DEFAULT_URL})"
    )
    # --dsn is accepted before the subcommand and after its arguments; the
    # subcommand's copy has no default so it does not undo the first one.
    common = _Parser(add_help=False)
    common.add_argument("--dsn", default=argparse.SUPPRESS, metavar="URL", help=dsn_help)
    parser = _Parser(
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
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status = command(
        "status",
        _status,
        "health, and every session's last change, keys, size and lease",
        "Check the store (round trip, schema, server and pool), then list every session with "
        "its last change (UTC), key count, stored size and lease holder and expiry, and name "
        "the sessions that need a look: creds but no keys, or a lease that expired with no "
        "owner. Metadata only, never secrets. Exit status 1 when the store is not healthy.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
        "is compared: identical, it is skipped (so an interrupted copy just runs again); "
        "different, it is reported and left alone unless --overwrite. A session held by a "
        "live lease on the source is refused unless --force: stop the bot, copy, then point "
        f"the bot at the target. Keys: the source's from {SOURCE_KEYS_ENV}, the target's from "
        f"{KEYS_ENV} ('id=BASE64,id2=BASE64'), never from the command line. The source is "
        "never written. Exit status 0 when every session is on the target as on the source, "
        "1 otherwise.",
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
        help="replace sessions the target holds with different contents",
    )
    copying.add_argument(
        "--force", action="store_true", help="copy sessions held by a live lease on the source"
    )
    copying.add_argument(
        "--verify-only",
        action="store_true",
        help="write nothing: compare every session with the target's copy",
    )
    copying.add_argument("--json", action="store_true", help="print the report as JSON")
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
        super().error(redact_text(message))


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
    """Run the command line; return the exit status.

    Exit status: 0 done; 1 the operation failed (the store, a folder, a
    refused or unconfirmed deletion); 2 bad usage (an unknown command or
    option, a bad ``--dsn`` or key variable, a DSN the server refuses (role,
    password, database, port, sslmode, host), a missing session, ``delete``
    without confirmation); 130 interrupted by Ctrl-C. Errors print one line
    to stderr, never a traceback and never a secret.
    """
    _INTERRUPT.note = ""
    args = _parser().parse_args(argv)
    run: Command = args.run
    try:
        return asyncio.run(_run(run, args))
    except UsageError as exc:
        _say(f"error: {exc}")
        return 2
    except StoreConfigurationError as exc:  # the DSN must change: as much a usage error
        _say(f"error: {redact_text(str(exc))}")
        return 2
    except SessionStoreError as exc:
        _say(f"error: {redact_text(str(exc))}")
        return 1
    except BrokenPipeError:
        # The reader went away (`| head`): not an error; keep Python from
        # complaining again when it flushes stdout at exit.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except OSError as exc:  # a folder that cannot be read or written
        _say(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        _say(f"\ninterrupted{': ' + _INTERRUPT.note if _INTERRUPT.note else ''}")
        return 130
    except Exception as exc:  # a bug: still one line, and no secret
        _say(
            f"error: unexpected {type(exc).__name__}: "
            f"{redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else '')} "
            "(please report this)"
        )
        return 1
