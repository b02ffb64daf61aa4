"""Moving sessions between wa_session_store and other places sessions live.

:mod:`~wa_session_store.interop.baileys` reads and writes the folders of
Baileys' ``useMultiFileAuthState``.
"""

from __future__ import annotations

from .baileys import (
    BAILEYS_CATEGORIES,
    CREDS_FILE,
    MANIFEST_FILE,
    BaileysExportReport,
    BaileysImportReport,
    Progress,
    baileys_file_name,
    export_baileys_folder,
    import_baileys_folder,
    parse_baileys_file_name,
)

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
