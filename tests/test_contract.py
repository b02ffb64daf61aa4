"""The AuthStateStore contract, run against every backend of the project through the kit.

The contract is :class:`wa_session_store.testing.StoreContract`, the class any
project subclasses to check its own backend; the ``make_store`` fixture it
needs is conftest's, parametrized over memory, SQLite, PostgreSQL and
PostgreSQL behind PgBouncer. So the project's backends pass exactly what a
third-party backend is asked to pass.
"""

from __future__ import annotations

from wa_session_store.testing import StoreContract


class TestStoreContract(StoreContract):
    """Every test of the kit, on every backend of ``conftest.make_store``."""
