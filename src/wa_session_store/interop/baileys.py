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

The work is split by responsibility, and every public name is importable
from here:

- :mod:`~wa_session_store.interop.baileys_format`: the file names, key
  categories and manifest names (no file is touched);
- :mod:`~wa_session_store.interop.baileys_import` and
  :mod:`~wa_session_store.interop.baileys_export`: the two directions;
- :mod:`~wa_session_store.interop.baileys_reports`: what both take and return
  (the progress callback, argument checks, the reports);
- ``_safe_read`` and ``_safe_write``: reading a folder that is not trusted
  (no links followed, sizes checked, FIFOs never blocking), and writing one
  atomically and durably, undone on failure.
"""

from __future__ import annotations

from .baileys_export import export_baileys_folder
from .baileys_format import (
    BAILEYS_CATEGORIES,
    CREDS_FILE,
    MANIFEST_FILE,
    baileys_file_name,
    parse_baileys_file_name,
)
from .baileys_import import import_baileys_folder
from .baileys_reports import BaileysExportReport, BaileysImportReport, Progress

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
