"""Leases with fencing tokens: kept importable here, they live in the PostgreSQL backend.

:class:`Lease`, :class:`LeasedCredsPage` and :func:`fenced` are in
:mod:`wa_session_store.backends.lease`, the statements that grant, renew and
release them and the fenced writes in
:mod:`wa_session_store.backends.postgres_leases` (a capability of
:class:`~wa_session_store.PostgresStore`), and :class:`LeaseRenewer` and
:class:`SessionWorker` in :mod:`wa_session_store.backends.lease_workers`.
"""

from __future__ import annotations

from .backends.lease import (
    Lease,
    LeasedCredsPage,
    LeaseInfo,
    LossCallback,
    check_lease_args,
    fenced,
)
from .backends.lease_workers import LeaseRenewer, SessionHandler, SessionWorker

__all__ = [
    "Lease",
    "LeaseInfo",
    "LeaseRenewer",
    "LeasedCredsPage",
    "LossCallback",
    "SessionHandler",
    "SessionWorker",
    "check_lease_args",
    "fenced",
]
