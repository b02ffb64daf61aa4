"""Baileys ``useMultiFileAuthState`` folders: import one into a store, export one from it.

Baileys keeps a session in a folder: ``creds.json`` and one JSON file per
Signal key, named ``fixFileName(f"{category}-{id}.json")``, where fixFileName
turns every ``/`` into ``__`` and then every ``:`` into ``-``. A container
redeploy wipes that folder; :func:`import_baileys_folder` moves it into a store
in one transaction, and :func:`export_baileys_folder` writes a store's session
back out as a folder Baileys reads.

fixFileName loses information (``:`` and ``-`` both end up as ``-``), so a file
name is turned back into the id a client asks for by a rule per category (see
:func:`parse_baileys_file_name`). Ids that no rule gives back — ids no Baileys
client makes, and categories this module does not know — are recorded by the
export in a small manifest, :data:`MANIFEST_FILE`, which the import reads. So
importing an export gives back exactly the session that was exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from .._codec import (
    DEFAULT_MAX_VALUE_SIZE,
    check_category,
    check_key_id,
    check_session_id,
    decode_value,
    encode_value,
)
from ..errors import DecodeError, InvalidInputError, InvalidTypeError
from ..store import AuthStateStore

__all__ = [
    "BAILEYS_CATEGORIES",
    "CREDS_FILE",
    "MANIFEST_FILE",
    "BaileysExportReport",
    "BaileysImportReport",
    "Progress",
    "baileys_file_name",
    "export_baileys_folder",
    "import_baileys_folder",
    "parse_baileys_file_name",
]

logger = logging.getLogger("wa_session_store")

T = TypeVar("T")

#: The creds document of a Baileys folder.
CREDS_FILE: Final = "creds.json"

#: Written by :func:`export_baileys_folder` next to the key files, only when
#: some id cannot be recovered from its file name; Baileys never reads it.
MANIFEST_FILE: Final = "wa-session-store-ids.json"
_MANIFEST_FORMAT: Final = "wa-session-store/baileys-ids"
_MANIFEST_VERSION: Final = 1

#: The key categories Baileys (v6 and v7) writes; files of other categories
#: are reported as unknown by :func:`import_baileys_folder`.
BAILEYS_CATEGORIES: Final[tuple[str, ...]] = (
    "pre-key",
    "session",
    "sender-key",
    "sender-key-memory",
    "app-state-sync-key",
    "app-state-sync-version",
    "lid-mapping",
    "device-list",
    "tctoken",
    "identity-key",
)

# Categories contain '-' themselves ("sender-key-memory-<id>.json" also starts
# with "sender-key-"), so the longest category that matches wins.
_LONGEST_FIRST: Final = sorted(BAILEYS_CATEGORIES, key=len, reverse=True)

# Files per trip to a worker thread: few trips (no per-file thread hop), and a
# progress report every few hundred files.
_BATCH: Final = 256

# Files written (and flushed to disk) at once by an export.
_WRITERS: Final = 8

# ext4, XFS, btrfs, APFS and NTFS all refuse longer names.
_MAX_NAME_BYTES: Final = 255

# What separates folders on this system: an id holding one would escape the folder.
_SEPARATORS: Final = tuple(sep for sep in (os.sep, os.altsep) if sep)

Progress = Callable[[int, int], object]
"""``progress(done, total)``: files handled so far, and how many there are."""


# -- file names ---------------------------------------------------------------


def baileys_file_name(category: str, key_id: str | int) -> str:
    """The file name Baileys gives a key: ``fixFileName(f"{category}-{key_id}.json")``.

    fixFileName replaces every ``/`` with ``__``, then every ``:`` with ``-``.
    """
    return f"{category}-{key_id}.json".replace("/", "__").replace(":", "-")


def _sender_key_id(fixed: str) -> str:
    # "<group jid>::<sender user>::<device>", its "::" written as "--". The user
    # and the device never hold a '-', but an old group jid does
    # ("<creator>-<timestamp>@g.us"), so the LAST two "--" are the separators.
    parts = fixed.rsplit("--", 2)
    return "::".join(parts) if len(parts) == 3 else fixed


def _app_state_sync_key_id(fixed: str) -> str:
    # Base64 ids hold '/' (written as "__") but never '_', '-' or ':'.
    return fixed.replace("__", "/")


def _same_id(fixed: str) -> str:
    # Every other category's ids hold neither '/' nor ':' (numbers, jids,
    # "user.device" addresses, LIDs, "_reverse", app-state names), so the
    # name is the id; a '-' stays a '-' and "__" stays "__".
    return fixed


_INVERSE: Final[Mapping[str, Callable[[str], str]]] = {
    "sender-key": _sender_key_id,
    "app-state-sync-key": _app_state_sync_key_id,
}


def parse_baileys_file_name(name: str) -> tuple[str, str] | None:
    """The ``(category, key id)`` a Baileys client reads from file ``name``, or None.

    The category is the longest of :data:`BAILEYS_CATEGORIES` that the name
    starts with, followed by ``-``. The id is the rest (without ``.json``),
    turned back by the category's rule:

    - ``sender-key``: the last two ``--`` become ``::``
      (``g@g.us--15551234567--0`` → ``g@g.us::15551234567::0``);
    - ``app-state-sync-key``: every ``__`` becomes ``/`` (``AAAAAJ__b`` → ``AAAAAJ/b``);
    - every other category: the id is the name as it is.

    Returns None for names that are not key files: no ``.json``, no known
    category, an empty or invalid id, or a name Baileys cannot have written
    (one holding ``:``), which a Baileys client would never read either.
    """
    if not name.endswith(".json"):
        return None
    stem = name[: -len(".json")]
    for category in _LONGEST_FIRST:
        prefix = category + "-"
        if not stem.startswith(prefix) or len(stem) == len(prefix):
            continue
        key_id = _INVERSE.get(category, _same_id)(stem[len(prefix) :])
        try:
            check_key_id(key_id)
        except InvalidInputError:
            continue
        if baileys_file_name(category, key_id) == name:
            return category, key_id
    return None


# -- reports ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BaileysImportReport:
    """What :func:`import_baileys_folder` found and imported.

    Attributes:
        session_id: the session written.
        path: the folder read.
        creds_found: whether ``creds.json`` was there (and was imported).
        counts: keys imported per category, ``{category: count}``.
        unknown_files: entries that are neither ``creds.json``, nor a key
            file, nor the manifest (sorted); not imported, and logged.
        skipped_files: key files holding JSON ``null``, which Baileys reads
            as absent; not imported.
        ids_from_manifest: keys whose id was taken from :data:`MANIFEST_FILE`
            rather than from the file-name rules.
    """

    session_id: str
    path: Path
    creds_found: bool
    counts: dict[str, int] = field(default_factory=dict)
    unknown_files: tuple[str, ...] = ()
    skipped_files: tuple[str, ...] = ()
    ids_from_manifest: int = 0

    @property
    def key_count(self) -> int:
        """Keys imported, every category together."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for a log or a terminal (names and counts, never values)."""
        parts = [
            f"imported {self.path} into session {self.session_id!r}:",
            f"creds {'yes' if self.creds_found else 'NO'},",
            f"{self.key_count} keys {_describe_counts(self.counts)}",
        ]
        if self.unknown_files:
            parts.append(f"; {len(self.unknown_files)} unknown files not imported")
        if self.skipped_files:
            parts.append(f"; {len(self.skipped_files)} null files skipped")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class BaileysExportReport:
    """What :func:`export_baileys_folder` wrote.

    Attributes:
        session_id: the session read.
        path: the folder written.
        creds_written: whether ``creds.json`` was written (False when the
            session holds keys only).
        counts: key files written per category, ``{category: count}``.
        files_written: every file written: key files, ``creds.json`` and the
            manifest.
        ids_in_manifest: keys whose id the file-name rules cannot give back,
            recorded in :data:`MANIFEST_FILE` (0: no manifest was written).
    """

    session_id: str
    path: Path
    creds_written: bool
    counts: dict[str, int] = field(default_factory=dict)
    files_written: int = 0
    ids_in_manifest: int = 0

    @property
    def key_count(self) -> int:
        """Key files written, every category together."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for a log or a terminal (names and counts, never values)."""
        manifest = (
            f"; {self.ids_in_manifest} ids in {MANIFEST_FILE}" if self.ids_in_manifest else ""
        )
        return (
            f"exported session {self.session_id!r} to {self.path}: "
            f"creds {'yes' if self.creds_written else 'NO'}, "
            f"{self.key_count} keys {_describe_counts(self.counts)}{manifest}"
        )


def _describe_counts(counts: Mapping[str, int]) -> str:
    if not counts:
        return ""
    return "(" + ", ".join(f"{category} {n}" for category, n in sorted(counts.items())) + ")"


# -- import -------------------------------------------------------------------


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


def _check_size(folder: Path, name: str, size: int, limit: int) -> None:
    if size > limit:
        raise InvalidInputError(
            f"{name} in {folder} is {size:,} bytes, over the store's max_value_size of "
            f"{limit:,}: it is not a Baileys file (or open the store with a higher "
            "max_value_size); nothing was read"
        )


_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _read_regular(folder: Path, name: str, limit: int) -> bytes:
    """The bytes of regular file ``folder/name``, read only if it is at most ``limit`` bytes.

    The listing was checked, but a file may be swapped after it: the file is
    opened without following a link and without blocking (a FIFO put in its
    place would block a plain open forever), then checked again on the open
    descriptor, and never more than ``limit`` bytes are read.
    """

    def swapped(what: str) -> InvalidInputError:
        return InvalidInputError(
            f"{name} in {folder} {what} after the folder was listed: stop the client using "
            "the folder, then import again"
        )

    try:
        fd = os.open(folder / name, _OPEN_FLAGS)
    except FileNotFoundError:
        raise swapped("vanished") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise swapped("was replaced by a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise swapped("was replaced by something that is not a regular file")
        _check_size(folder, name, info.st_size, limit)
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    _check_size(folder, name, len(data), limit)  # it grew while it was read
    return data


def _decode_file(folder: Path, name: str, data: bytes) -> Any:
    try:
        return decode_value(data, what=name)
    except DecodeError:
        raise InvalidInputError(
            f"{name} in {folder} {_diagnose(data)}; fix or delete that file and import again "
            "(Baileys itself reads an unreadable file as absent)"
        ) from None


def _diagnose(data: bytes) -> str:
    """Why ``data`` is not BufferJSON, for a message: a position, never content."""
    if not data.strip():
        return "is empty (a write cut short by a crash?)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (invalid byte at offset {exc.start})"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg is a fixed phrase such as "Expecting value"; it never quotes the text.
        return f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except RecursionError:
        return "is nested too deeply to decode"
    except ValueError:  # Python's int-to-str limit: a number of thousands of digits
        return (
            f"holds a number of more than {sys.get_int_max_str_digits():,} digits, "
            "which no Baileys file holds"
        )
    return "holds a malformed Buffer (data is neither valid base64 nor a list of bytes 0..255)"


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


# -- export -------------------------------------------------------------------


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


# -- arguments ----------------------------------------------------------------


def _as_path(path: object) -> Path:
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise InvalidTypeError(
            f"path must be a str or a str path-like object, not {type(path).__name__}"
        )
    if not text:
        # Path("") is the current folder: never what an empty argument meant.
        raise InvalidInputError("path must not be empty: name the Baileys folder")
    if "\x00" in text:
        raise InvalidInputError("path contains a NUL character, which no folder name can hold")
    return Path(text)


def _check_progress(progress: object) -> None:
    if progress is not None and not callable(progress):
        raise InvalidTypeError(
            f"progress must be a callable(done, total) or None, not {type(progress).__name__}"
        )
