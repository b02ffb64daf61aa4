"""Writing a folder for a Baileys export: atomically, durably, and undone on failure.

The folder is created (mode 0700) or must be empty; each file is written to a
fresh temporary file (mode 0600), flushed to disk and renamed into place, so
no file is ever half written; the folder itself is flushed so the renames
last; and a failed export removes what it wrote. The work runs on worker
threads that a cancellation waits for, so the clean-up sees every file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import InvalidInputError

T = TypeVar("T")


def _prepare_folder(folder: Path, created: list[Path]) -> None:
    """Create ``folder`` (mode 0700), or check that it is an empty folder.

    ``folder`` is appended to ``created`` the moment it is made, so that an
    export interrupted right after knows to remove it.
    """
    try:
        folder.mkdir(mode=0o700, parents=True)  # file names are contacts' ids: private too
        created.append(folder)
        return
    except FileExistsError:
        pass
    if not folder.is_dir():
        raise InvalidInputError(
            f"{folder} exists and is not a folder: export into a new or empty folder"
        )
    with os.scandir(folder) as entries:
        count = sum(1 for _ in entries)
    if count:
        raise InvalidInputError(
            f"{folder} is not empty ({count} entries): export into a new or empty folder, so "
            "that no file of another session is mixed in or replaced; nothing was written"
        )


def _write_file(folder: Path, name: str, data: bytes, written: list[str]) -> None:
    """Write ``data`` to ``folder/name`` atomically and durably, and record ``name``."""
    # mkstemp: a fresh name no one else uses, created with mode 0600.
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".wa-session-store-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, folder / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    written.append(name)


def _check_written(folder: Path, written: list[str]) -> None:
    # A case-insensitive (or normalising) file system would silently let one
    # key file replace another; then a name written is missing from the listing.
    with os.scandir(folder) as entries:
        present = {entry.name for entry in entries}
    missing = [name for name in written if name not in present]
    if missing:
        raise InvalidInputError(
            f"the file system of {folder} merged {len(missing)} file names with others, e.g. "
            f"{missing[0]!r}: it is case-insensitive or normalises names, and Baileys' file "
            "names need one that keeps them apart (export to a case-sensitive file system)"
        )


def _fsync_folder(folder: Path) -> None:
    # Renames are durable once the folder itself is flushed. Windows cannot
    # open a folder for that; NTFS journals the renames.
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_written(folder: Path, written: list[str], created: bool) -> None:
    """Undo a failed export: remove what it wrote, and the folder if it created it."""
    for name in written:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: never removes anything it did not write


async def _in_thread(func: Callable[[], T]) -> T:
    """Run ``func`` on a worker thread; if cancelled, wait for the thread before going on.

    A thread cannot be stopped, and the clean-up after a cancelled export must
    see every file the thread wrote.
    """
    task = asyncio.ensure_future(asyncio.to_thread(func))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as lost
        raise
