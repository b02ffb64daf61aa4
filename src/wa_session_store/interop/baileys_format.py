"""The Baileys folder format: its file names, key categories and id manifest.

Baileys' ``useMultiFileAuthState`` keeps a session in a folder:
``creds.json`` and one JSON file per Signal key, named
``fixFileName(f"{category}-{id}.json")``, where fixFileName turns every ``/``
into ``__`` and then every ``:`` into ``-``. :func:`baileys_file_name` makes
that name; :func:`parse_baileys_file_name` turns a name back into the id a
client asks for, by a rule per category, since fixFileName loses information
(``:`` and ``-`` both end up as ``-``). Ids no rule gives back are recorded by
an export in :data:`MANIFEST_FILE`, which an import reads.

Only names here: no file is read or written. :mod:`wa_session_store.interop.baileys`
re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from ..errors import InvalidInputError
from ..store.ids import check_key_id

__all__ = [
    "BAILEYS_CATEGORIES",
    "CREDS_FILE",
    "MANIFEST_FILE",
    "baileys_file_name",
    "parse_baileys_file_name",
]


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
