"""Keep WhatsApp multi-device auth states (creds and Signal keys) alive across deploys."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._open import open_store
from .backends.memory import MemoryStore
from .backends.postgres import PostgresStore
from .backends.sqlite import SQLiteStore
from .errors import (
    DecodeError,
    InvalidInputError,
    InvalidTypeError,
    SchemaVersionError,
    SessionStoreError,
    StoreClosedError,
    StoreOperationError,
    StoreUnavailableError,
)
from .retry import AttemptTimeoutError, RetryDetails, RetryHook, RetryPolicy
from .store import AuthStateStore, SessionInfo

try:
    __version__ = version("wa-session-store")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AttemptTimeoutError",
    "AuthStateStore",
    "DecodeError",
    "InvalidInputError",
    "InvalidTypeError",
    "MemoryStore",
    "PostgresStore",
    "RetryDetails",
    "RetryHook",
    "RetryPolicy",
    "SQLiteStore",
    "SchemaVersionError",
    "SessionInfo",
    "SessionStoreError",
    "StoreClosedError",
    "StoreOperationError",
    "StoreUnavailableError",
    "__version__",
    "open_store",
]
