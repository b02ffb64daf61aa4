"""Exporting a stored session as a Baileys ``useMultiFileAuthState`` folder.

:func:`export_baileys_folder` reads the session in one snapshot, plans every
file name first (refusing names Baileys cannot tell apart, too long or
holding a path separator, and listing in the manifest the ids the file-name
rules cannot give back), then writes the files with ``_safe_write``:
key files first, the manifest, and ``creds.json`` last.
:mod:`wa_session_store.interop.baileys` re-exports it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from ..errors import DecodeError, InvalidInputError
from ..store.base import AuthStateStore
from ..store.codec import encode_value
from ..store.ids import check_session_id
from ._safe_write import (
    _check_written,
    _fsync_folder,
    _in_thread,
    _prepare_folder,
    _remove_written,
    _write_file,
)
from .baileys_format import (
    _MANIFEST_FORMAT,
    _MANIFEST_VERSION,
    CREDS_FILE,
    MANIFEST_FILE,
    baileys_file_name,
    parse_baileys_file_name,
)
from .baileys_reports import _BATCH, BaileysExportReport, Progress, _as_path, _check_progress

__all__ = [
    "export_baileys_folder",
]


logger = logging.getLogger("wa_session_store")


# Files written (and flushed to disk) at once by an export.
_WRITERS: Final = 8

# ext4, XFS, btrfs, APFS and NTFS all refuse longer names.
_MAX_NAME_BYTES: Final = 255

# What separates folders on this system: an id holding one would escape the folder.
_SEPARATORS: Final = tuple(sep for sep in (os.sep, os.altsep) if sep)


@dataclass(slots=True)
class _ExportPlan:
    """Every file to write, checked before the first one is."""

    files: list[tuple[str, str, str, Any]] = field(
        default_factory=list
    )  # name, category, id, value
    manifest: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


async def export_baileys_folder(
    store: AuthStateStore,
    session_id: str,
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
) -> BaileysExportReport:
    """Write session ``session_id`` as a Baileys ``useMultiFileAuthState`` folder.

    The session is read in one snapshot (``export_session``); every key goes
    to the file Baileys reads it from (:func:`baileys_file_name`) as Baileys
    writes it, ``JSON.stringify(value, BufferJSON.replacer)``: compact UTF-8
    JSON with Buffers as ``{"type": "Buffer", "data": "<base64>"}``.

    The folder is created (with missing parents) if it does not exist; an
    existing folder must be empty, so that no key of another session is mixed
    in and no unrelated file is ever replaced. Each file is written to a
    temporary file, flushed to disk and renamed into place, so no file is ever
    half written; ``creds.json`` comes last, so a folder cut short has no
    creds and a client would start afresh rather than run on missing keys. On
    any failure (or cancellation, a Ctrl-C included) the files written so far
    are removed again, and the folder too if this call created it. Files are
    created readable by their owner only (mode 0600): they hold the account's
    private keys; a folder this call creates gets mode 0700.

    Ids the file-name rules cannot give back (see
    :func:`parse_baileys_file_name`) are listed in :data:`MANIFEST_FILE`,
    written only when there are some; Baileys ignores it.

    Args:
        store: an open store.
        session_id: the session to export.
        path: the folder to write (``str`` or path-like).
        progress: called on the event loop after each batch of files written,
            as ``progress(files written, files to write)``; the last call has
            both equal. An exception it raises aborts the export (what was
            written is removed). Default None.

    Returns:
        A :class:`BaileysExportReport`.

    Raises:
        InvalidInputError: the session is not stored; ``path`` exists and is
            not an empty folder; two keys would share a file name (Baileys
            cannot tell them apart); a file name would be longer than 255
            bytes or hold a path separator; or the file system merged file
            names (case-insensitive). Nothing is left written.
        InvalidTypeError: ``path`` is not a str or path-like, or ``progress``
            is not callable.
        DecodeError: the stored creds are not a JSON object, or a stored value
            does not decode.
        OSError: the folder or a file could not be written (permissions,
            disk full); what was written is removed.
        StoreUnavailableError, StoreOperationError: as for every store call.
    """
    sid = check_session_id(session_id)
    folder = _as_path(path)
    _check_progress(progress)
    exported = await store.export_session(sid)
    if exported is None:
        raise InvalidInputError(f"session {sid!r} is not stored: nothing to export")
    creds = exported.creds
    if creds is not None and not isinstance(creds, dict):
        raise DecodeError(f"creds of session {sid!r} are not a JSON object")
    plan = _plan_export(sid, exported.keys)
    total = len(plan.files) + bool(plan.manifest) + (creds is not None)

    written: list[str] = []
    created: list[Path] = []  # the folder, once this call created it
    try:
        await _in_thread(partial(_prepare_folder, folder, created))
        for start in range(0, len(plan.files), _BATCH):
            batch = plan.files[start : start + _BATCH]
            await _in_thread(partial(_write_keys, folder, batch, written))
            if progress is not None:
                progress(len(written), total)
        await _in_thread(partial(_check_written, folder, written))
        if plan.manifest:
            manifest = {
                "format": _MANIFEST_FORMAT,
                "version": _MANIFEST_VERSION,
                "session_id": sid,
                "keys": plan.manifest,
            }
            data = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
            await _in_thread(partial(_write_file, folder, MANIFEST_FILE, data, written))
            if progress is not None:
                progress(len(written), total)
        if creds is not None:
            data = encode_value(creds, what=f"creds of session {sid!r}", max_size=sys.maxsize)
            # Every key file is on disk before creds.json appears.
            await _in_thread(partial(_fsync_folder, folder))
            await _in_thread(partial(_write_file, folder, CREDS_FILE, data, written))
            if progress is not None:
                progress(len(written), total)
        await _in_thread(partial(_fsync_folder, folder))
    except BaseException:
        await _in_thread(partial(_remove_written, folder, written, bool(created)))
        raise

    if creds is None:
        logger.warning(
            "session %r has no creds: %s holds keys only, and a Baileys client will pair anew",
            sid,
            folder,
        )
    report = BaileysExportReport(
        session_id=sid,
        path=folder,
        creds_written=creds is not None,
        counts=plan.counts,
        files_written=len(written),
        ids_in_manifest=len(plan.manifest),
    )
    logger.info("%s", report.summary())
    return report


def _plan_export(session_id: str, keys: Mapping[str, Mapping[str, Any]]) -> _ExportPlan:
    plan = _ExportPlan()
    owners: dict[str, tuple[str, str]] = {}
    reserved = {CREDS_FILE, MANIFEST_FILE}
    for category in sorted(keys):
        entries = keys[category]
        for key_id in sorted(entries):
            what = f"{category} key {key_id!r} of session {session_id!r}"
            name = baileys_file_name(category, key_id)
            if name in reserved:
                raise InvalidInputError(f"{what} would be written as {name}, a reserved name")
            if name in owners:
                other_category, other_id = owners[name]
                raise InvalidInputError(
                    f"{what} and {other_category} key {other_id!r} would both be written as "
                    f"{name!r}: Baileys' file names cannot tell them apart; nothing was written"
                )
            if len(name.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
                raise InvalidInputError(
                    f"{what} makes a file name over {_MAX_NAME_BYTES} bytes, "
                    "which file systems refuse; nothing was written"
                )
            if any(sep in name for sep in _SEPARATORS):
                raise InvalidInputError(
                    f"{what} holds a path separator of this system, so it cannot be a "
                    "file name; nothing was written"
                )
            owners[name] = (category, key_id)
            if parse_baileys_file_name(name) != (category, key_id):
                plan.manifest[name] = [category, key_id]
            plan.files.append((name, category, key_id, entries[key_id]))
        if entries:
            plan.counts[category] = len(entries)
    return plan


def _write_keys(folder: Path, batch: list[tuple[str, str, str, Any]], written: list[str]) -> None:
    encoded = [
        (
            name,
            encode_value(value, what=f"value of {category} key {key_id!r}", max_size=sys.maxsize),
        )
        for name, category, key_id, value in batch
    ]
    # The fsync of each file dominates (one journal commit each); with several
    # in flight the file system commits them together (3-4x faster on ext4).
    # Leaving the pool waits for every write, so `written` is complete on error.
    with ThreadPoolExecutor(max_workers=_WRITERS) as pool:
        for _ in pool.map(lambda item: _write_file(folder, item[0], item[1], written), encoded):
            pass
