"""What a Baileys import and export share at their edges: their arguments and reports.

The progress callback (:data:`Progress`) and how often it is called, the
checks of the ``path`` and ``progress`` arguments, and the reports returned:
:class:`BaileysImportReport` and :class:`BaileysExportReport`, whose
``summary()`` names files and counts, never values.
:mod:`wa_session_store.interop.baileys` re-exports the public names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..errors import InvalidInputError, InvalidTypeError
from .baileys_format import MANIFEST_FILE

__all__ = [
    "BaileysExportReport",
    "BaileysImportReport",
    "Progress",
]


# Files per trip to a worker thread: few trips (no per-file thread hop), and a
# progress report every few hundred files.
_BATCH: Final = 256


Progress = Callable[[int, int], object]
"""``progress(done, total)``: files handled so far, and how many there are."""


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
