"""The public paths do not move (issue 23): the names of ``wa_session_store``
and of its documented modules, the command line's entry points, and the
module the errors say they come from. Internal modules may move; these may not."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import wa_session_store
from wa_session_store import errors

ROOT = Path(__file__).resolve().parents[1]

#: Each documented module and the names it must keep (its ``__all__`` today).
DOCUMENTED: dict[str, list[str]] = {
    "wa_session_store.sync": [
        "BlockingCallInLoopError",
        "InheritedFacadeError",
        "SyncAuthKeys",
        "SyncAuthState",
        "SyncRestoreResult",
        "SyncSessionHandler",
        "SyncSessionWorker",
        "SyncStore",
        "THREAD_NAME",
        "open_sync_store",
        "restore_all_sync",
        "use_sync_auth_state",
    ],
    "wa_session_store.metrics": [
        "DURATION_BUCKETS",
        "Metrics",
        "OpenTelemetryMetrics",
        "PrometheusMetrics",
        "metrics_of",
    ],
    "wa_session_store.interop": [
        "BAILEYS_CATEGORIES",
        "BaileysExportReport",
        "BaileysImportReport",
        "CREDS_FILE",
        "MANIFEST_FILE",
        "Progress",
        "baileys_file_name",
        "export_baileys_folder",
        "import_baileys_folder",
        "parse_baileys_file_name",
    ],
    "wa_session_store.testing": ["CREDS", "HOSTILE_IDS", "StoreContract", "StoreFactory"],
}
#: The client integrations, each with its optional client library.
INTEGRATIONS: dict[str, tuple[str, list[str]]] = {
    "wa_session_store.integrations.pyaileys": (
        "pyaileys",
        [
            "AuthStateOptions",
            "CREDS_UPDATE_EVENT",
            "FIELD_NAMES",
            "PyaileysAuthState",
            "PyaileysBinding",
            "creds_from_document",
            "creds_to_document",
            "use_pyaileys_auth_state",
        ],
    ),
    "wa_session_store.integrations.waton": (
        "waton",
        [
            "AuthStateOptions",
            "FIELD_NAMES",
            "METADATA_PREFIX",
            "WatonAuthState",
            "WatonBinding",
            "WatonStorage",
            "creds_from_document",
            "creds_to_document",
            "metadata_category",
            "use_waton_auth_state",
        ],
    ),
}
#: ``wa_session_store.__all__`` as it is: a name may be added, never removed.
PUBLIC = [
    "AESGCMCipher", "AttemptTimeoutError", "AuthKeys", "AuthState", "AuthStateOptions",
    "AuthStateStore", "BackupScheduler", "Cipher", "CopyProgress", "CopyReport",
    "CredsConflictError", "CredsPage", "DecodeError", "DecryptionError", "InvalidInputError",
    "InvalidTypeError", "KeyTransaction", "KeyWrites", "Lease", "LeaseInfo", "LeaseLostError",
    "LeaseRenewer", "LeaseUnavailableError", "MemoryStore", "PostgresStore", "ReencryptProgress",
    "RestoreResult", "RetryDetails", "RetryHook", "RetryPolicy", "SQLiteStore",
    "SchemaVersionError", "SessionCopy", "SessionExistsError", "SessionExport", "SessionInfo",
    "SessionStoreError", "SessionWorker", "StoreClosedError", "StoreConfigurationError",
    "StoreHealth", "StoreOperationError", "StoreUnavailableError", "Throttler", "__version__",
    "close_all", "copy_sessions", "install_shutdown_handler", "open_store",
    "prekey_counters_changed", "restore_all", "use_auth_state",
]  # fmt: skip


def test_the_package_keeps_its_names() -> None:
    assert set(PUBLIC) <= set(wa_session_store.__all__)
    for name in wa_session_store.__all__:
        assert getattr(wa_session_store, name) is not None, name


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_the_documented_modules_keep_their_names(module: str) -> None:
    imported = importlib.import_module(module)
    assert set(DOCUMENTED[module]) <= set(imported.__all__)
    for name in DOCUMENTED[module]:
        assert hasattr(imported, name), f"{module}.{name}"


@pytest.mark.parametrize("module", sorted(INTEGRATIONS))
def test_the_integrations_keep_their_names(module: str) -> None:
    client, names = INTEGRATIONS[module]
    pytest.importorskip(client)
    imported = importlib.import_module(module)
    for name in names:
        assert hasattr(imported, name), f"{module}.{name}"


def test_the_errors_show_the_public_path() -> None:
    """Tracebacks and pickles name ``wa_session_store.X``, wherever X lives."""
    for name in dir(errors):
        value = getattr(errors, name)
        if (
            isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__.startswith("wa_session_store")
        ):
            assert value.__module__ == "wa_session_store", name
            assert getattr(wa_session_store, name) is value


def test_the_command_line_entry_points() -> None:
    # (read as text: tomllib is Python 3.11+, and the suite runs on 3.10 too)
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1]
    assert scripts.split("[")[0].strip() == 'wa-session-store = "wa_session_store.cli:main"'
    from wa_session_store.cli import main

    assert callable(main)
    done = subprocess.run(
        [sys.executable, "-m", "wa_session_store", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout


def test_the_backends_entry_point_group() -> None:
    from wa_session_store.backends.schemes import BACKENDS_GROUP

    assert BACKENDS_GROUP == "wa_session_store.backends"
