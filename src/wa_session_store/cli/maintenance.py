"""The whole-store subcommands: ``check``, ``migrate``, ``reencrypt``, ``copy`` and ``demo``.

They test, upgrade, rekey, move or exercise a store as a whole rather than
one named session.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import TYPE_CHECKING

from ..backends.open import redact_url
from ..backends.postgres import PostgresStore
from ..errors import StoreUnavailableError
from .common import (
    _INTERRUPT,
    KEYS_ENV,
    SOURCE_KEYS_ENV,
    Progress,
    _cipher_from_env,
    _store,
)
from .exit_codes import ExitStatus, UnavailableError, UsageError, for_operator, print_json

if TYPE_CHECKING:
    from ..store.copy_report import CopyReport


async def _check(args: argparse.Namespace) -> int:
    """Connectivity, the server that answered, round-trip latency, schema version,
    pool settings; then a probe write."""
    probe = "__wa_session_store_check__"
    creds = {"registrationId": 1, "noiseKey": {"public": os.urandom(32)}}
    keys = {"pre-key": {str(i): {"public": os.urandom(33)} for i in range(1, 4)}}
    started = time.perf_counter()
    async with _store(args, create=True) as store:
        opened = (time.perf_counter() - started) * 1000
        latencies = []
        for _ in range(5):
            begun = time.perf_counter()
            await store.load_creds(probe)
            latencies.append((time.perf_counter() - begun) * 1000)
        version = await store.schema_version()
        health = await store.health()  # which server answered, and whether it takes writes
        if health.role not in (None, "primary"):
            # The probe write would only spend the retry budget on 25006.
            raise UnavailableError(
                f"{health.error}; point --dsn at the primary, or list every server in it "
                "with target_session_attrs=read-write"
            )
        begun = time.perf_counter()
        await store.save_creds(probe, creds)
        await store.set_keys(probe, keys)
        loaded = await store.load_creds(probe)
        got = await store.get_keys(probe, "pre-key", list(keys["pre-key"]))
        await store.delete_session(probe)
        probed = (time.perf_counter() - begun) * 1000
    if loaded != creds or got != keys["pre-key"]:
        print(f"FAILED: {store!r} did not give back what was written", file=sys.stderr)
        return ExitStatus.FAILED
    print(f"store:        {redact_url(args.dsn)} ({store.kind})")
    if health.server is not None:  # PostgreSQL: the host of a multi-host DSN that answered
        print(f"server:       {health.server} ({health.role}, {health.server_version})")
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
    return ExitStatus.OK


async def _migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the schema (run it as the owner role)."""
    _INTERRUPT.note = "each schema step is one transaction; run migrate again to finish"
    async with _store(args, create=True, migrate=True) as store:
        version = await store.schema_version()
    print(f"schema of {redact_url(args.dsn)} is at version {version}")
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
    from ..store.copy_report import CopyProgress
    from ..store.transfer import copy_sessions

    if args.source == args.target:
        raise UsageError("--from and --to name the same store")
    source = _store(args, url=args.source, keys_env=SOURCE_KEYS_ENV)
    target = _store(args, url=args.target, create=not args.verify_only)
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
    status = _copy_status(report)
    if args.json:
        document = report.to_json()
        for entry in document["sessions"]:
            if "detail" in entry:
                entry["detail"] = for_operator(entry["detail"])
        print_json(document, status, report.summary())
    else:
        for outcome in report.sessions:
            if outcome.detail and outcome.status != "skipped":
                print(f"{outcome.session_id}: {outcome.status}: {for_operator(outcome.detail)}")
        print(report.summary())
    if any(o.error == "DecryptionError" for o in report.sessions):
        print(
            f"hint: the source's keys come from {SOURCE_KEYS_ENV}, the target's from {KEYS_ENV}",
            file=sys.stderr,
        )
    return status


def _copy_status(report: CopyReport) -> ExitStatus:
    """FAILED if a session failed, else REFUSED if one was in conflict or refused, else OK."""
    if report.count("failed"):
        return ExitStatus.FAILED
    return ExitStatus.OK if report.ok else ExitStatus.REFUSED


async def _demo(args: argparse.Namespace) -> int:
    """Run the demo (see :mod:`wa_session_store.cli.demo`); 0 if nothing was lost, else 1."""
    from .demo import run_demo

    report = await run_demo(
        args.dsn, updates=args.updates, throttle=args.throttle, duration=args.duration
    )
    return ExitStatus.OK if report.nothing_lost else ExitStatus.FAILED
