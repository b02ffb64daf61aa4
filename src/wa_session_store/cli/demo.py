"""``wa-session-store demo``: a bot on a store, a redeploy, and a check that nothing was lost.

:func:`run_demo` pairs a simulated bot (a new session, fresh creds shaped like
Baileys' ``AuthenticationCreds``), uploads 812 pre-keys in one write, then
sends a storm of ``creds.update`` events interleaved with Signal key writes
(session ratchets, sender keys, consumed pre-keys) through
:func:`~wa_session_store.use_auth_state`, closes gracefully and drops
everything. A *new process* (``python -m wa_session_store.cli.demo --verify``)
then restores every session with :func:`~wa_session_store.restore_all` and
checks the demo session against what the bot last had: the creds document
and every key, compared by SHA-256 digest. The expectation travels to that
process on its stdin, never on its command line; no key or creds content is
ever printed.

The demo works on a ``sqlite:///…`` or ``postgresql://…`` store. It deletes
and rewrites the session :data:`SESSION_ID` (``"demo-bot"``) and reads (never
writes) any other session the store holds. ``memory://`` is refused: a new
process cannot see the memory of this one.

The simulated bot (its creds, key writes and the storm's pacing) lives in
``demo_bot.py``, and the report with its verdict in ``demo_report.py``; what
stays here is one program read top to bottom (pair, storm, close, restore in
a new process, the report), with that process's entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..auth.restore import close_all, restore_all
from ..auth.state import use_auth_state
from ..backends.open import open_store, redact_url
from ..errors import InvalidInputError, InvalidTypeError, SessionStoreError, describe_error
from .demo_bot import PREKEY_COUNT, _Bot, _digest, _storm
from .demo_report import DemoReport, plural, verdict_lines

__all__ = ["PREKEY_COUNT", "SESSION_ID", "DemoReport", "run_demo"]

#: The session the demo deletes and rewrites.
SESSION_ID = "demo-bot"

_BACKUP_INTERVAL = 300.0  # the library's default backup interval
_VERIFY_TIMEOUT = 120.0  # seconds the restoring process may take


async def run_demo(
    url: str,
    *,
    updates: int = 5000,
    key_writes: int = 500,
    throttle: float = 1.0,
    duration: float = 3.0,
    out: Callable[[str], None] = print,
    store_options: Mapping[str, Any] | None = None,
) -> DemoReport:
    """Simulate a bot on the store at ``url``, redeploy it, and check that nothing was lost.

    Deletes the session ``"demo-bot"`` if it exists, pairs it anew, uploads
    812 pre-keys, sends ``updates`` creds updates and ``key_writes`` key
    writes spread over ``duration`` seconds, closes, then restores every
    session in a new Python process and compares the demo session with what
    the bot last had. Prints a short report through ``out``, one line per
    call; it never contains key bytes, creds content or a DSN password.

    Args:
        url: a ``sqlite:///…`` or ``postgresql://…`` store URL (``memory://``
            is refused: the restoring process could not see it).
        updates: creds updates during the storm (default 5000).
        key_writes: Signal key writes during the storm (default 500).
        throttle: at most one creds save per this many seconds (default 1.0).
        duration: seconds the storm is spread over (default 3.0).
        out: where report lines go (default :func:`print`).
        store_options: keyword arguments for :func:`~wa_session_store.open_store`,
            in this process and the restoring one, so JSON values only (e.g.
            ``{"schema": "bots"}``; default None).

    Returns:
        The :class:`DemoReport`; its ``nothing_lost`` is the verdict.

    Raises:
        InvalidInputError: a bad argument, or a ``memory://`` URL (nothing is
            touched then).
        SessionStoreError: the store failed, or the restoring process did.
    """
    options = _check_arguments(url, updates, key_writes, throttle, duration, store_options)
    out(f"wa_session_store demo — {redact_url(url)}")
    bot = _Bot()
    store = open_store(url, **options)
    async with store:
        replaced = await store.delete_session(SESSION_ID)
        auth = await use_auth_state(
            store,
            SESSION_ID,
            throttle=throttle,
            backup_interval=_BACKUP_INTERVAL,
            initial_delay=_BACKUP_INTERVAL,
        )
        try:
            if auth.creds is not None:  # pragma: no cover - someone wrote it meanwhile
                raise SessionStoreError(f"session {SESSION_ID!r} reappeared after its deletion")
            await auth.save_creds(bot.creds)
            out(
                f"paired: new session {SESSION_ID}"
                f"{', replacing the previous demo run' if replaced else ''}"
                " (a QR code would be scanned here)"
            )

            started = time.perf_counter()
            await auth.keys.set(bot.upload_prekeys())
            upload_ms = _ms_since(started)
            auth.creds_updated()  # the counters moved: an urgent save
            await auth.flush()
            out(
                f"uploaded {PREKEY_COUNT} pre-keys in 1 write ({upload_ms:.1f} ms); "
                "pre-key counters saved at once"
            )

            runs_before = auth.throttler.runs
            storm_seconds = await _storm(auth, bot, updates, key_writes, duration)
            pending_at_close = auth.pending
            started = time.perf_counter()
            await auth.aclose()
            close_ms = _ms_since(started)
        except BaseException:
            with contextlib.suppress(Exception):
                await auth.aclose()
            raise
        creds_writes = auth.throttler.runs - runs_before
        if auth.creds is not bot.creds:  # pragma: no cover - a bug of the demo itself
            raise SessionStoreError("the auth state does not hold the bot's last creds")
    out(
        f"storm: {plural(bot.updates, 'creds update')} -> {plural(creds_writes, 'creds write')} "
        f"(throttle {float(throttle)!r} s), {plural(bot.key_writes, 'key write')} "
        f"in {storm_seconds:.1f} s"
    )
    out(
        "stopped: "
        + (
            f"the last update saved on close ({close_ms:.1f} ms)"
            if pending_at_close
            else "nothing was pending on close"
        )
        + "; everything dropped"
    )

    expectation = {
        "url": url,
        "store_options": options,
        "session_id": SESSION_ID,
        "throttle": throttle,
        "creds": _digest(bot.creds),
        "keys": bot.expected_keys(),
    }
    found = await _verify_in_new_process(expectation)

    report = DemoReport(
        url=redact_url(url),
        session_id=SESSION_ID,
        replaced_previous=replaced,
        prekeys_uploaded=PREKEY_COUNT,
        upload_ms=upload_ms,
        updates=bot.updates,
        creds_writes=creds_writes,
        key_writes=bot.key_writes,
        throttle=float(throttle),
        storm_seconds=storm_seconds,
        pending_at_close=pending_at_close,
        close_ms=close_ms,
        restored_sessions=int(found["restored"]),
        failed_sessions=int(found["failed"]),
        open_ms=float(found["open_ms"]),
        restore_ms=float(found["restore_ms"]),
        session_found=bool(found["found"]),
        creds_match=bool(found["creds_match"]),
        keys_expected=int(found["keys_expected"]),
        keys_ok=int(found["keys_ok"]),
        keys_missing=int(found["keys_missing"]),
        keys_stale=int(found["keys_stale"]),
        consumed=int(found["consumed"]),
        consumed_gone=int(found["consumed_gone"]),
        stored_keys=int(found["stored_keys"]),
    )
    for line in verdict_lines(report):
        out(line)
    return report


# -- the redeploy: a new process restores and checks ------------------------


async def _verify_in_new_process(expectation: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``python -m wa_session_store.cli.demo --verify`` with ``expectation`` on stdin."""
    payload = json.dumps(expectation).encode("utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wa_session_store.cli.demo",
        "--verify",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(payload), _VERIFY_TIMEOUT)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    result: Any = None
    if lines:
        with contextlib.suppress(ValueError):
            result = json.loads(lines[-1])
    if isinstance(result, dict) and "error" in result:
        raise SessionStoreError(f"the restoring process failed: {result['error']}")
    if proc.returncode != 0 or not isinstance(result, dict):
        errors = stderr.decode("utf-8", "replace").strip().splitlines()
        reason = errors[-1][:300] if errors else "no output"
        raise SessionStoreError(
            f"the restoring process exited with status {proc.returncode}: {reason}"
        )
    return result


async def _verify(expectation: Mapping[str, Any]) -> dict[str, Any]:
    """Open the store, restore every session, and compare the demo session with ``expectation``."""
    session_id = str(expectation["session_id"])
    wanted: dict[str, dict[str, str | None]] = expectation["keys"]
    started = time.perf_counter()
    store = open_store(str(expectation["url"]), **expectation["store_options"])
    async with store:
        open_ms = _ms_since(started)
        started = time.perf_counter()
        restored = await restore_all(
            store, throttle=float(expectation["throttle"]), backup_interval=None
        )
        restore_ms = _ms_since(started)
        try:
            auth = restored.states.get(session_id)
            creds_match = (
                auth is not None
                and auth.creds is not None
                and _digest(auth.creds) == expectation["creds"]
            )
            ok = missing = stale = consumed = gone = 0
            for category, entries in wanted.items():
                got = await store.get_keys(session_id, category, list(entries))
                for key_id, digest in entries.items():
                    value = got.get(key_id)
                    if digest is None:
                        consumed += 1
                        gone += value is None
                    elif value is None:
                        missing += 1
                    elif _digest(value) == digest:
                        ok += 1
                    else:
                        stale += 1
            infos = {info.session_id: info for info in await store.list_sessions()}
            stored_keys = infos[session_id].key_count if session_id in infos else 0
        finally:
            await close_all(restored.states.values())
    return {
        "restored": len(restored.states),
        "failed": len(restored.failed),
        "open_ms": open_ms,
        "restore_ms": restore_ms,
        "found": auth is not None,
        "creds_match": creds_match,
        "keys_expected": ok + missing + stale,
        "keys_ok": ok,
        "keys_missing": missing,
        "keys_stale": stale,
        "consumed": consumed,
        "consumed_gone": gone,
        "stored_keys": stored_keys,
    }


# -- helpers ----------------------------------------------------------------


def _check_arguments(
    url: object,
    updates: object,
    key_writes: object,
    throttle: object,
    duration: object,
    store_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Validate everything before the store is touched; return the store options."""
    if not isinstance(url, str):
        raise InvalidTypeError(f"url must be a str, not {type(url).__name__}")
    if url.partition("://")[0].lower() == "memory":
        raise InvalidInputError(
            "the demo restores the session in a new process, which cannot see a memory:// "
            "store; use sqlite:///path.db or postgresql://…"
        )
    for name, count in (("updates", updates), ("key_writes", key_writes)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidInputError(f"{name} must be an int >= 0, not {count!r}")
    for name, seconds in (("throttle", throttle), ("duration", duration)):
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise InvalidInputError(f"{name} must be a finite number of seconds >= 0")
    if store_options is None:
        return {}
    if not isinstance(store_options, Mapping):
        raise InvalidTypeError(
            f"store_options must be a mapping or None, not {type(store_options).__name__}"
        )
    options = dict(store_options)
    try:
        json.dumps(options)
    except (TypeError, ValueError):
        raise InvalidTypeError(
            "store_options must hold JSON values only (str, int, float, bool, None, lists, "
            "dicts): they are passed to the restoring process"
        ) from None
    return options


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _main(argv: list[str]) -> int:
    """The restoring process: the expectation on stdin, one JSON line on stdout."""
    if argv != ["--verify"]:
        print(
            "this module is the demo's restoring process; run the demo with: "
            "python -m wa_session_store demo",
            file=sys.stderr,
        )
        return 2
    try:
        result = asyncio.run(_verify(json.loads(sys.stdin.buffer.read())))
    except Exception as exc:
        print(json.dumps({"error": describe_error(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
