"""Keep WhatsApp multi-device auth states (creds and Signal keys) alive across deploys."""

from __future__ import annotations

from ._version import __version__
from .auth.keys import KeyTransaction, KeyWrites
from .auth.restore import RestoreResult, close_all, install_shutdown_handler, restore_all
from .auth.state import (
    AuthKeys,
    AuthState,
    AuthStateOptions,
    prekey_counters_changed,
    use_auth_state,
)
from .auth.throttle import BackupScheduler, Throttler
from .backends.lease import Lease, LeaseInfo
from .backends.lease_workers import LeaseRenewer, SessionWorker
from .backends.memory import MemoryStore
from .backends.open import open_store
from .backends.postgres import PostgresStore
from .backends.sqlite import SQLiteStore
from .errors import (
    CredsConflictError,
    DecodeError,
    DecryptionError,
    InvalidInputError,
    InvalidTypeError,
    LeaseLostError,
    LeaseUnavailableError,
    SchemaVersionError,
    SessionExistsError,
    SessionStoreError,
    StoreClosedError,
    StoreConfigurationError,
    StoreOperationError,
    StoreUnavailableError,
)
from .store.base import (
    AuthStateStore,
    CredsPage,
    ReencryptProgress,
    SessionExport,
    SessionInfo,
    StoreHealth,
)
from .store.copy_report import CopyProgress, CopyReport, SessionCopy
from .store.crypto import AESGCMCipher, Cipher
from .store.retry import AttemptTimeoutError, RetryPolicy
from .store.retry_report import RetryDetails, RetryHook
from .store.transfer import copy_sessions

__all__ = [
    "AESGCMCipher",
    "AttemptTimeoutError",
    "AuthKeys",
    "AuthState",
    "AuthStateOptions",
    "AuthStateStore",
    "BackupScheduler",
    "Cipher",
    "CopyProgress",
    "CopyReport",
    "CredsConflictError",
    "CredsPage",
    "DecodeError",
    "DecryptionError",
    "InvalidInputError",
    "InvalidTypeError",
    "KeyTransaction",
    "KeyWrites",
    "Lease",
    "LeaseInfo",
    "LeaseLostError",
    "LeaseRenewer",
    "LeaseUnavailableError",
    "MemoryStore",
    "PostgresStore",
    "ReencryptProgress",
    "RestoreResult",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "SQLiteStore",
    "SchemaVersionError",
    "SessionCopy",
    "SessionExistsError",
    "SessionExport",
    "SessionInfo",
    "SessionStoreError",
    "SessionWorker",
    "StoreClosedError",
    "StoreConfigurationError",
    "StoreHealth",
    "StoreOperationError",
    "StoreUnavailableError",
    "Throttler",
    "__version__",
    "close_all",
    "copy_sessions",
    "install_shutdown_handler",
    "open_store",
    "prekey_counters_changed",
    "restore_all",
    "use_auth_state",
]
