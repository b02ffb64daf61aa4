"""Copying sessions from one store to another: :func:`copy_sessions` (what it
reports is :mod:`~wa_session_store.store.copy_report`'s).

A session is read from the source with :meth:`~wa_session_store.store.base.BaseStore.export_session`
(one snapshot, decoded with the source's cipher) and written to the target with
:meth:`~wa_session_store.store.base.BaseStore.import_session` (one transaction, sealed
with the target's cipher), so a copy uses the same code as every other import
and export. Then the target's copy is read back and compared, decoded, with
what was read from the source.

Every comparison (resuming, ``verify_only``, the check after writing) is
:func:`exactly_equal`: type for type, so a target holding ``1`` where the
source holds ``True``, or ``1`` where it holds ``1.0``, differs, even though
Python's ``==`` calls them equal.

The three steps run as a pipeline: while the target writes session *n*, the
source is already being read for session *n + 1* and the target's copy of
session *n - 1* is being verified. A copy of many sessions therefore costs
about the target's batch writes, not a sum of round trips per session.

Resuming is decided by content: a session the target already holds is read
back and compared with the source; if it is identical, it is reported as
skipped (a copy that was interrupted after it), otherwise as a conflict, left
alone unless ``overwrite`` (which replaces it). A session is written in one transaction, so an
interruption never leaves half a session on the target.

Leases are respected on both sides (stores with leases: PostgreSQL). A session
a live lease holds on the source is refused (its owner is still writing, so
the copy would be stale at once) unless ``force``. A session a live lease
holds on the target is always refused, ``force`` or not: its owner is writing
it, and a copy written under it would leave a mix of both.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

from ..errors import (
    InvalidInputError,
    LeaseUnavailableError,
    SessionExistsError,
    SessionStoreError,
    StoreClosedError,
    StoreUnavailableError,
)
from .base import AuthStateStore, SessionExport, SessionInfo
from .copy_report import CopyProgress, CopyReport, CopyStatus, SessionCopy
from .ids import check_session_id

__all__ = ["copy_sessions"]

# Errors after which no further session can succeed: stop the copy and raise.
_FATAL = (StoreUnavailableError, StoreClosedError)


@runtime_checkable
class _LeaseLookup(Protocol):
    async def lease_holder(self, session_id: str) -> tuple[str, int, datetime] | None: ...


async def live_lease(store: AuthStateStore, session_id: str) -> LeaseUnavailableError | None:
    """The error ``acquire_lease`` would raise for ``session_id``: its live lease on ``store``.

    The one lease check of a copy, for the source and the target alike. None
    when no live lease holds the session, or for a store without leases
    (SQLite, memory). One round trip on a store with leases.
    """
    if not isinstance(store, _LeaseLookup):
        return None
    holder = await store.lease_holder(session_id)
    if holder is None or holder[2] <= datetime.now(timezone.utc):
        return None
    return LeaseUnavailableError(session_id, holder[0], holder[2])


@dataclass(slots=True)
class _Read:
    """One session as the reading stage hands it on."""

    info: SessionInfo
    exported: SessionExport | None = None
    outcome: SessionCopy | None = None  # decided already: nothing to write


def exactly_equal(a: object, b: object) -> bool:
    """Whether two decoded values are the same, type for type, at every depth.

    Stricter than ``==``: ``True`` differs from ``1``, ``1.0`` from ``1``,
    ``-0.0`` from ``0.0``, bytes from str, a list from a tuple, because each
    is stored differently and a client reading them back may act on the
    difference. The one comparison every step of a copy makes (resuming,
    ``verify_only``, the check after writing). Dict keys are compared as
    ``==`` does (decoded documents have str keys only).
    """
    pairs: list[tuple[object, object]] = [(a, b)]
    while pairs:  # a loop, not recursion: depth is bounded by the codec, not the stack
        x, y = pairs.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            pairs += [(value, y[key]) for key, value in x.items()]
        elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                return False
            pairs += zip(x, y, strict=True)
        elif isinstance(x, float) and isinstance(y, float):
            if x != y or math.copysign(1.0, x) != math.copysign(1.0, y):
                return False
        elif x != y:
            return False
    return True


def describe_difference(expected: SessionExport, actual: SessionExport | None) -> str | None:
    """What differs between two exports of a session (None when they are equal).

    Compared with :func:`exactly_equal`. Names the creds and key ids only,
    never a value.
    """
    if actual is None:
        return "not on the target"
    problems: list[str] = []
    if not exactly_equal(actual.creds, expected.creds):
        if actual.creds is None:
            problems.append("creds missing on the target")
        elif expected.creds is None:
            problems.append("creds on the target but not on the source")
        else:
            problems.append("creds differ")
    differ: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    extra: list[tuple[str, str]] = []
    for category in sorted(set(expected.keys) | set(actual.keys)):
        want = expected.keys.get(category, {})
        have = actual.keys.get(category, {})
        for key_id, value in want.items():
            if key_id not in have:
                missing.append((category, key_id))
            elif not exactly_equal(have[key_id], value):
                differ.append((category, key_id))
        extra += [(category, key_id) for key_id in have if key_id not in want]
    for found, one_label, many_label in (
        (differ, "differs", "differ"),
        (missing, "missing on the target", "missing on the target"),
        (extra, "on the target only", "on the target only"),
    ):
        if found:
            category, key_id = found[0]
            if len(found) == 1:
                problems.append(f"1 key {one_label} ({category} {key_id!r})")
            else:
                problems.append(f"{len(found):,} keys {many_label} (first: {category} {key_id!r})")
    return "; ".join(problems) or None


async def copy_sessions(
    source: AuthStateStore,
    target: AuthStateStore,
    sessions: Iterable[str] | None = None,
    *,
    overwrite: bool = False,
    force: bool = False,
    verify_only: bool = False,
    progress: Callable[[CopyProgress], None] | None = None,
) -> CopyReport:
    """Copy sessions from ``source`` to ``target`` (both open), verifying each.

    Each session is read in one snapshot from the source, written in one
    transaction to the target (through ``import_session``), then read back
    from the target and compared with what was read, creds and every key,
    decoded, type for type (:func:`exactly_equal`). Values are decrypted with
    the source's cipher and sealed with the target's, so the two may differ
    (plaintext to sealed, key A to key B).

    Running it again after an interruption finishes the rest: a session the
    target already holds is compared with the source and skipped if it is
    identical. Stop the bot before copying: a session written on the source
    after it was read is not copied.

    A session that a live lease holds on the target (a store with leases:
    PostgreSQL) is never written, whatever ``overwrite`` and ``force`` say:
    its owner is writing it, and the copy would leave a mix of both. It is
    ``refused``: stop that owner, or wait for its lease to expire, and copy
    again. (The check runs as the session is read, one pipeline step before
    its write: an owner that takes the lease in between is not seen.)

    Args:
        source: the store to read from (never written).
        target: the store to write to.
        sessions: the ids to copy (default None: every session of the source).
        overwrite: replace a session the target holds with different contents
            (default False: report it as a ``conflict`` and leave it). Identical
            ones are skipped either way; one a live lease holds on the target
            is ``refused``.
        force: copy a session held by a live lease on the source (default
            False: ``refused``; its owner is still writing, so the copy would be
            stale at once). It never applies to a lease on the target.
        verify_only: write nothing; compare each session with the target's
            copy (``verified`` or ``failed``).
        progress: called after each session with the counts so far.

    Returns:
        The :class:`CopyReport`; ``report.ok`` is True when every session is on
        the target as on the source.

    Raises:
        InvalidInputError: the same store as source and target, or an invalid
            session id (nothing is read or written).
        StoreUnavailableError, StoreClosedError: a store became unreachable
            (after its retries) or was closed; sessions copied before stay
            copied, and a new run resumes.

    Other errors of a session (one that does not decode, a value the target
    refuses, a difference after writing) are reported as ``failed`` and the
    copy goes on with the next session.
    """
    if source is target:
        raise InvalidInputError("source and target are the same store")
    wanted = None if sessions is None else [check_session_id(sid) for sid in sessions]
    started = time.perf_counter()
    source_list, target_list = await asyncio.gather(source.list_sessions(), target.list_sessions())
    on_source = {info.session_id: info for info in source_list}
    on_target = {info.session_id for info in target_list}
    order = list(dict.fromkeys(wanted)) if wanted is not None else list(on_source)
    report = CopyReport(verify_only=verify_only)
    counts = CopyProgress(
        sessions_total=len(order),
        keys_total=sum(on_source[sid].key_count for sid in order if sid in on_source),
    )
    check_source_leases = not (force or verify_only)

    def finish(outcome: SessionCopy) -> None:
        report.sessions.append(outcome)
        counts.sessions_done += 1
        info = on_source.get(outcome.session_id)
        if info is not None:
            counts.keys_done += info.key_count
            counts.bytes_done += info.size
        if progress is not None:
            progress(counts)

    def outcome(
        read: _Read, status: CopyStatus, detail: str = "", error: BaseException | None = None
    ) -> SessionCopy:
        info = read.info
        name = "" if error is None else type(error).__name__
        return SessionCopy(info.session_id, status, info.key_count, info.size, detail, name)

    def refused(read: _Read, held: LeaseUnavailableError, where: str) -> SessionCopy:
        until = held.expires_at.isoformat(timespec="seconds")
        detail = f"held by a live lease of {held.holder!r} until {until} {where}"
        return outcome(read, "refused", detail, held)

    async def settle(
        read: _Read, step: Awaitable[SessionCopy | None], context: str = ""
    ) -> SessionCopy | None:
        """``step``'s outcome (None: go on); an error of this session fails only it."""
        try:
            return await step
        except _FATAL:
            raise
        except SessionStoreError as exc:
            return outcome(read, "failed", f"{context}{exc}", exc)

    async def check(read: _Read) -> SessionCopy | None:
        sid = read.info.session_id
        read.exported = await source.export_session(sid)
        if read.exported is None:  # deleted since the listing
            return outcome(read, "failed", "not stored in the source")
        # Checked after the read: a lease taken before or during it means an
        # owner that may have written after the snapshot.
        held = await live_lease(source, sid) if check_source_leases else None
        if held is not None:
            return refused(
                read,
                held,
                "on the source: stop that owner, or pass force=True (--force) to copy it anyway",
            )
        if verify_only or sid in on_target:
            difference = describe_difference(read.exported, await target.export_session(sid))
            if verify_only:
                return outcome(read, "failed" if difference else "verified", difference or "")
            if difference is None:
                return outcome(read, "skipped", "already on the target")
            if not overwrite:
                return outcome(
                    read,
                    "conflict",
                    f"the target holds a different session of this id: {difference}; "
                    "pass overwrite=True (--overwrite) to replace it",
                )
        # Checked last, so as close to the write as the pipeline allows: an
        # owner there would go on writing over (or under) the copy.
        held = await live_lease(target, sid)
        if held is not None:
            return refused(
                read,
                held,
                "on the target: stop that owner, or wait for its "
                "lease to expire, then copy again (force, --force, does not apply to the target)",
            )
        return None

    async def write(read: _Read) -> SessionCopy | None:
        exported = read.exported
        assert exported is not None
        try:
            await target.import_session(
                read.info.session_id, exported.creds, exported.keys, overwrite=overwrite
            )
        except SessionExistsError:
            # Created on the target since the listing; never replaced without overwrite.
            return outcome(
                read,
                "conflict",
                "stored on the target meanwhile; pass overwrite=True (--overwrite) to replace it",
            )
        return None

    async def verify(read: _Read) -> SessionCopy:
        exported = read.exported
        assert exported is not None
        difference = describe_difference(
            exported, await target.export_session(read.info.session_id)
        )
        if difference is not None:
            return outcome(
                read, "failed", f"the target's copy differs from the source: {difference}"
            )
        return outcome(read, "copied")

    async def read_one(sid: str) -> _Read:
        info = on_source.get(sid)
        if info is None:
            missing = _Read(SessionInfo(sid, datetime.now(timezone.utc), 0, False))
            missing.outcome = outcome(missing, "failed", "not stored in the source")
            return missing
        read = _Read(info)
        read.outcome = await settle(read, check(read))
        return read

    async def write_one(read: _Read) -> _Read:
        read.outcome = await settle(read, write(read))
        return read

    async def verify_one(read: _Read) -> SessionCopy:
        verified = await settle(read, verify(read), "reading it back from the target: ")
        assert verified is not None
        return verified

    # Three stages joined by queues of one: reading n+1, writing n, verifying n-1.
    to_write: asyncio.Queue[_Read | None] = asyncio.Queue(maxsize=1)
    to_verify: asyncio.Queue[_Read | None] = asyncio.Queue(maxsize=1)

    async def reader() -> None:
        for sid in order:
            await to_write.put(await read_one(sid))
        await to_write.put(None)

    async def writer() -> None:
        while (read := await to_write.get()) is not None:
            await to_verify.put(read if read.outcome is not None else await write_one(read))
        await to_verify.put(None)

    async def verifier() -> None:
        while (read := await to_verify.get()) is not None:
            finish(read.outcome if read.outcome is not None else await verify_one(read))

    stages = [asyncio.ensure_future(stage()) for stage in (reader, writer, verifier)]
    try:
        await _all_or_none(stages)
    finally:
        report.seconds = time.perf_counter() - started
    return report


async def _all_or_none(tasks: Sequence[asyncio.Future[None]]) -> None:
    """Wait for every task; on the first failure (or a cancellation) cancel the rest and raise."""
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
