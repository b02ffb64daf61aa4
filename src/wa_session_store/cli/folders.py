"""The Baileys folder subcommands: ``import`` and ``export``.

Both move one session between the store and a multi-file auth folder written
the way Baileys' ``useMultiFileAuthState`` writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from .common import _INTERRUPT, Progress, _say, _store, _stored_session
from .exit_codes import NotFoundError


async def _import(args: argparse.Namespace) -> int:
    """Import a Baileys multi-file auth folder as one session, atomically.

    A Ctrl-C while the folder is read imports nothing. Once every file is read
    the session is written in one transaction: a Ctrl-C then lets that
    transaction finish and says that it landed (a second Ctrl-C abandons it,
    and says that it may or may not have landed). The store is created if
    it does not exist, but not for a folder that is not there.
    """
    from ..interop.baileys import import_baileys_folder

    if not await asyncio.to_thread(os.path.lexists, args.folder):
        raise NotFoundError(
            f"no folder at {args.folder}: expected the folder Baileys' useMultiFileAuthState "
            "wrote; nothing was imported"
        )
    progress = Progress(f"reading {args.folder}")
    read_all = False

    def track(done: int, total: int) -> None:
        nonlocal read_all
        read_all = done >= total
        progress(done, total)

    async with _store(args, create=True) as store:
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
    from ..interop.baileys import export_baileys_folder

    progress = Progress(f"writing {args.folder}")
    _INTERRUPT.note = f"what was written to {args.folder} has been removed"
    async with _store(args) as store:
        await _stored_session(store, args)
        report = await export_baileys_folder(store, args.session, args.folder, progress=progress)
    progress.done()
    print(report.summary())
    return 0
