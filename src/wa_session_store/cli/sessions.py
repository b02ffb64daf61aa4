"""The per-session subcommands: ``list``, ``status``, ``show`` and ``delete``.

Each reads (or, for ``delete``, removes) what the store holds for its
sessions and prints metadata only, never a key or creds value.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from ..backends.open import redact_url
from ..backends.postgres import PostgresStore
from ..store.base import BaseStore
from .common import _INTERRUPT, _ago, _ask, _say, _size, _store, _stored_session
from .exit_codes import ExitStatus, NotFoundError, RefusedError, print_json


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
    health = report["health"]
    status = ExitStatus.OK if health["ok"] else ExitStatus.UNAVAILABLE
    if args.json:
        print_json(report, status, f"the store is not healthy: {health['error']}")
        return status
    state = "ok" if health["ok"] else f"NOT OK: {health['error']}"
    rtt = health["round_trip_ms"]
    print(
        f"store:    {redact_url(args.dsn)} ({health['backend']}) {state}"
        + (f", round trip {rtt:.2f} ms" if rtt is not None else "")
    )
    if health["server"] is not None:  # PostgreSQL: which host of the DSN answered, as what
        print(f"server:   {health['server']} ({health['role']})")
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
    return status


async def _show(args: argparse.Namespace) -> int:
    """Metadata of one session; never a key or creds value."""
    async with _store(args) as store:
        info = await _stored_session(store, args)
        exported = await store.export_session(args.session)
        holder = (
            await store.lease_holder(args.session) if isinstance(store, PostgresStore) else None
        )
    if exported is None:  # deleted between the two reads
        raise NotFoundError(f"no session {args.session!r} in {redact_url(args.dsn)}")
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


async def _delete(args: argparse.Namespace) -> int:
    """Delete a session's creds and keys, after confirmation."""
    async with _store(args) as store:
        info = await _stored_session(store, args)
        if not args.yes:
            if sys.stdin is None or sys.stdin.closed or not sys.stdin.isatty():
                raise RefusedError(
                    f"refusing to delete session {args.session!r} without confirmation "
                    "(no terminal to ask on): pass --yes"
                )
            _INTERRUPT.note = "nothing deleted"
            answer = await _ask(
                f"Delete session {args.session!r} ({'creds and ' if info.has_creds else ''}"
                f"{info.key_count:,} keys)? This cannot be undone. [y/N] ",
            )
            if answer is None:
                print()
                _say("no answer (end of input): nothing deleted")
                return ExitStatus.REFUSED
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return ExitStatus.REFUSED
            _INTERRUPT.note = ""
        await store.delete_session(args.session)
    print(f"deleted session {args.session!r}")
    return 0
