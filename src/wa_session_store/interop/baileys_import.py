"""Importing a Baileys ``useMultiFileAuthState`` folder into a store.

:func:`import_baileys_folder` lists the folder (refusing links, checking
sizes), reads the manifest if an export wrote one, reads and decodes every
file on worker threads (``_safe_read``), then writes the whole session in
one ``import_session`` transaction. :mod:`wa_session_store.interop.baileys`
re-exports it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..store.base import AuthStateStore
from ..store.codec import DEFAULT_MAX_VALUE_SIZE
from ..store.ids import check_category, check_key_id, check_session_id
from ._safe_read import _check_size, _decode_file, _read_regular
from .baileys_format import (
    _MANIFEST_FORMAT,
    _MANIFEST_VERSION,
    CREDS_FILE,
    MANIFEST_FILE,
    baileys_file_name,
    parse_baileys_file_name,
)
from .baileys_reports import _BATCH, BaileysImportReport, Progress, _as_path, _check_progress

__all__ = [
    "import_baileys_folder",
]


logger = logging.getLogger("wa_session_store")


@dataclass(slots=True)
class _Listing:
    """A Baileys folder as listed: which files to read, and what else is there."""

    has_creds: bool = False
    keys: list[tuple[str, str, str]] = field(default_factory=list)  # (file, category, key id)
    unknown: list[str] = field(default_factory=list)
    from_manifest: int = 0


async def import_baileys_folder(
    store: AuthStateStore,
    session_id: str,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> BaileysImportReport:
    """Import a Baileys ``useMultiFileAuthState`` folder as session ``session_id``.

    Every file is read and decoded first (on worker threads, never on the
    event loop; Buffers in either BufferJSON form, base64 or a list of ints,
    come back as ``bytes``), file names are turned back into the ids a client
    asks for (see :func:`parse_baileys_file_name`, and :data:`MANIFEST_FILE`
    when an export wrote one), and then the whole session is written with one
    :meth:`~wa_session_store.AuthStateStore.import_session` call: one
    transaction, all of it or nothing. The folder is never changed.

    Entries that are neither ``creds.json`` nor key files (other files, other
    categories, sub-folders) are not imported: they are listed in the report
    and logged at WARNING. Key files holding JSON ``null`` are skipped, as
    Baileys skips them (listed in ``skipped_files``).

    Stop the client that uses the folder first: files it writes meanwhile may
    or may not be part of the import.

    Args:
        store: an open store.
        session_id: the session to write.
        path: the folder (``str`` or path-like).
        overwrite: replace a session already stored under ``session_id``
            (default False: refuse it).
        progress: called on the event loop after each batch of files read,
            as ``progress(files read, files to read)`` (``creds.json`` and key
            files); the last call has both equal. An exception it raises
            aborts the import, before anything is written. Default None.

    Returns:
        A :class:`BaileysImportReport`.

    Only regular files of the folder itself are read: a ``creds.json``, key
    file or manifest that is a symbolic link is refused, sizes are checked
    before anything is read (a file over the store's ``max_value_size`` is
    refused), and a file swapped after the listing (for a link, a FIFO, a
    bigger file) is refused instead of followed or blocking.

    Raises:
        InvalidInputError: ``path`` is missing, not a folder, or holds neither
            ``creds.json`` nor key files; a file to import is a symbolic
            link, is not a regular file, or is over ``max_value_size`` bytes;
            a file is not valid JSON/BufferJSON
            (the error names the file, never its content); ``creds.json`` is
            not a JSON object; the manifest is malformed; or the store refuses
            an id or value. Nothing is written.
        InvalidTypeError: ``path`` is not a str or path-like, or ``progress``
            is not callable.
        SessionExistsError: the session is stored and ``overwrite`` is False
            (nothing is written).
        OSError: a file could not be read (permissions, I/O error).
        StoreUnavailableError, StoreOperationError: as for every store call.
    """
    sid = check_session_id(session_id)
    folder = _as_path(path)
    _check_progress(progress)
    limit = _file_limit(store)
    listing = await asyncio.to_thread(_list_folder, folder, limit)
    names = ([CREDS_FILE] if listing.has_creds else []) + [name for name, _, _ in listing.keys]
    total = len(names)
    values: list[Any] = []
    for start in range(0, total, _BATCH):
        batch = names[start : start + _BATCH]
        values += await asyncio.to_thread(_read_files, folder, batch, limit)
        if progress is not None:
            progress(len(values), total)

    creds: dict[str, Any] | None = None
    if listing.has_creds:
        document = values.pop(0)
        if not isinstance(document, dict):
            raise InvalidInputError(
                f"{CREDS_FILE} in {folder} holds a JSON {_json_kind(document)}, not an object: "
                "it is not a Baileys creds document"
            )
        creds = document
    keys: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for (name, category, key_id), value in zip(listing.keys, values, strict=True):
        if value is None:
            skipped.append(name)
        else:
            keys.setdefault(category, {})[key_id] = value

    if listing.unknown:
        logger.warning(
            "Baileys folder %s: %d entries are neither %s nor key files and are not imported: %s",
            folder,
            len(listing.unknown),
            CREDS_FILE,
            _list_names(listing.unknown),
        )
    if skipped:
        logger.warning(
            "Baileys folder %s: %d key files hold null (absent for Baileys) and are skipped: %s",
            folder,
            len(skipped),
            _list_names(skipped),
        )

    await store.import_session(sid, creds, keys, overwrite=bool(overwrite))
    if creds is None:
        logger.warning(
            "Baileys folder %s has no %s: session %r got keys only, and a client will have "
            "to pair again",
            folder,
            CREDS_FILE,
            sid,
        )
    report = BaileysImportReport(
        session_id=sid,
        path=folder,
        creds_found=creds is not None,
        counts={category: len(entries) for category, entries in sorted(keys.items())},
        unknown_files=tuple(listing.unknown),
        skipped_files=tuple(skipped),
        ids_from_manifest=listing.from_manifest,
    )
    logger.info("%s", report.summary())
    return report


def _file_limit(store: AuthStateStore) -> int:
    """The largest file an import reads: the store's ``max_value_size``."""
    limit = getattr(store, "max_value_size", DEFAULT_MAX_VALUE_SIZE)
    return limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_VALUE_SIZE


def _importable(name: str) -> bool:
    return name in (CREDS_FILE, MANIFEST_FILE) or parse_baileys_file_name(name) is not None


def _list_folder(folder: Path, limit: int) -> _Listing:
    try:
        with os.scandir(folder) as entries:
            found = []
            for entry in entries:
                # Nothing is followed: a link could lead anywhere (a key file of
                # another account, /dev/zero), so a link is refused, not read.
                if entry.is_symlink() and _importable(entry.name):
                    raise InvalidInputError(
                        f"{entry.name} in {folder} is a symbolic link; an import reads only "
                        "regular files of the folder itself: replace the link by the file"
                    )
                regular = entry.is_file(follow_symlinks=False)
                if regular and _importable(entry.name):
                    _check_size(
                        folder, entry.name, entry.stat(follow_symlinks=False).st_size, limit
                    )
                found.append((entry.name, regular))
    except FileNotFoundError:
        raise InvalidInputError(
            f"no folder at {folder}: expected the folder Baileys' useMultiFileAuthState "
            f"wrote ({CREDS_FILE} and <category>-<id>.json files)"
        ) from None
    except NotADirectoryError:
        raise InvalidInputError(
            f"{folder} is a file, not a folder: expected the folder Baileys' "
            f"useMultiFileAuthState wrote ({CREDS_FILE} and <category>-<id>.json files)"
        ) from None
    files = sorted(name for name, is_file in found if is_file)
    listing = _Listing(unknown=sorted(name for name, is_file in found if not is_file))
    manifest = _read_manifest(folder, limit) if MANIFEST_FILE in files else {}
    for name in files:
        if name == CREDS_FILE:
            listing.has_creds = True
        elif name == MANIFEST_FILE:
            continue
        elif name in manifest:
            listing.keys.append((name, *manifest[name]))
            listing.from_manifest += 1
        elif (parsed := parse_baileys_file_name(name)) is not None:
            listing.keys.append((name, *parsed))
        else:
            listing.unknown.append(name)
    listing.unknown.sort()
    if not listing.has_creds and not listing.keys:
        others = f" (only {len(listing.unknown)} other entries)" if listing.unknown else " (empty)"
        raise InvalidInputError(
            f"{folder} holds neither {CREDS_FILE} nor <category>-<id>.json key files{others}: "
            "it is not a Baileys useMultiFileAuthState folder"
        )
    return listing


def _read_manifest(folder: Path, limit: int) -> dict[str, tuple[str, str]]:
    def bad(problem: str) -> InvalidInputError:
        return InvalidInputError(
            f"{MANIFEST_FILE} in {folder} {problem}; it was written by wa_session_store's "
            "export: restore it, or delete it to import by the file-name rules alone"
        )

    try:
        document = json.loads(_read_regular(folder, MANIFEST_FILE, limit))
    except (ValueError, RecursionError):
        raise bad("is not valid JSON") from None
    if not isinstance(document, dict) or document.get("format") != _MANIFEST_FORMAT:
        raise bad("is not a wa_session_store id manifest")
    version = document.get("version")
    if version != _MANIFEST_VERSION:
        raise InvalidInputError(
            f"{MANIFEST_FILE} in {folder} has version {version!r}; this wa_session_store "
            f"reads version {_MANIFEST_VERSION}: upgrade it"
        )
    entries = document.get("keys")
    if not isinstance(entries, dict):
        raise bad("has no 'keys' object")
    manifest: dict[str, tuple[str, str]] = {}
    for name, entry in entries.items():
        if not (
            isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)
        ):
            raise bad(f"maps {name!r} to something other than [category, key id]")
        category, key_id = entry
        try:
            check_category(category)
            check_key_id(key_id)
        except InvalidInputError:
            raise bad(f"maps {name!r} to an invalid category or key id") from None
        # An entry can only choose among the ids Baileys itself would store in
        # that file, so a stale or edited manifest cannot misplace a key.
        if baileys_file_name(category, key_id) != name:
            raise bad(f"maps {name!r} to {category} key {key_id!r}, which Baileys stores elsewhere")
        manifest[name] = (category, key_id)
    return manifest


def _read_files(folder: Path, names: list[str], limit: int) -> list[Any]:
    return [_decode_file(folder, name, _read_regular(folder, name, limit)) for name in names]


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "Buffer"
    return "array" if isinstance(value, list) else type(value).__name__


def _list_names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
