"""The store contract as a pytest kit: run every test of it against any backend.

The contract is what every :class:`~wa_session_store.AuthStateStore` of this
project keeps, written once as one test class, :class:`StoreContract` (the
pattern of the ``limits`` library, where one test class runs against every
storage). The project's own backends (memory, SQLite, PostgreSQL, PostgreSQL
behind PgBouncer) run through this class, so what a third-party backend is
checked against cannot drift from what the project checks itself.

Subclass it in a test module and give it a ``make_store`` fixture: a
factory of stores of your backend that all use **one database** (the same
file, schema or server), passing its keyword arguments (the options of
:class:`~wa_session_store.store.base.BaseStore`, such as ``max_value_size``) to
the store's constructor. The kit opens and closes the stores itself::

    import pytest
    from wa_session_store.testing import StoreContract

    from my_package import MyStore


    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda **options: MyStore(tmp_path / "sessions.db", **options)

Each test starts from an empty database: the fixture must give each test a
fresh one (``tmp_path``, a new schema). ``make_store`` may also be a fixture
of a ``conftest.py`` (a ``make_store`` defined in the class wins); parametrize
it to run the contract on several configurations. The kit's ``store`` fixture
is ``make_store()``, opened for the test and closed after it.

The tests are coroutines marked ``asyncio``: they run under pytest-asyncio in
its strict or auto mode, on a loop per test. Some reach below the public
methods, into the primitives of :class:`~wa_session_store.store.base.BaseStore`
(``_write_creds``, ``_replace_session``) and its version clock, because the
rules they check (a late write never replaces a newer one) cannot be seen
from above: the kit is for stores built on ``BaseStore`` (see the guide,
"Writing a backend").

Importing this package imports pytest and pytest-asyncio (``pip install
'wa-session-store[testing]'``); importing :mod:`wa_session_store` does not.

The contract is written by topic, one module each, and :class:`StoreContract`
runs them all: ``creds.py`` (round trips, the version that orders saves),
``keys.py`` (reads, batches, value sizes), ``sessions.py`` (ids, listing,
deleting, the store's life, several writers), ``export_import.py`` (whole
sessions) and ``fencing.py`` (writes under a lease); ``base.py`` holds what
they share (:data:`CREDS`, :data:`HOSTILE_IDS`, :data:`StoreFactory`, the
``store`` fixture). While a backend is young, subclass one topic's class
(``wa_session_store.testing.keys.KeysContract``, say) to run its tests only;
a backend keeps the contract when it passes :class:`StoreContract`.
"""

from __future__ import annotations

from .base import CREDS, HOSTILE_IDS, StoreFactory
from .creds import CredsContract
from .export_import import ExportImportContract
from .fencing import FencingContract
from .keys import KeysContract
from .sessions import SessionsContract

__all__ = ["CREDS", "HOSTILE_IDS", "StoreContract", "StoreFactory"]


class StoreContract(
    SessionsContract, CredsContract, KeysContract, ExportImportContract, FencingContract
):
    """The contract of a store, one test per rule; subclass it as ``Test...``.

    Needs a ``make_store`` fixture (see the package's documentation): a
    factory of unopened stores of one database, which accepts the keyword
    arguments of :class:`~wa_session_store.store.base.BaseStore`. Without it,
    pytest reports ``fixture 'make_store' not found`` for every test.
    """
