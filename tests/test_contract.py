"""The AuthStateStore contract, run against every backend of the project through the kit.

The contract is :class:`wa_session_store.testing.StoreContract`, the class any
project subclasses to check its own backend; the ``make_store`` fixture it
needs is conftest's, parametrized over memory, SQLite, PostgreSQL and
PostgreSQL behind PgBouncer. So the project's backends pass exactly what a
third-party backend is asked to pass.
"""

from __future__ import annotations

from collections import Counter

from wa_session_store.testing import StoreContract
from wa_session_store.testing.fencing import FencingContract


class TestStoreContract(StoreContract):
    """Every test of the kit, on every backend of ``conftest.make_store``."""


class TestOneTopicAlone(FencingContract):
    """One topic's class runs by itself, as the kit's guide offers a young backend."""


def test_the_topics_make_the_whole_contract() -> None:
    """Each topic's tests are its own: a name in two topics would hide one of them."""
    topics = [
        name for base in StoreContract.__bases__ for name in vars(base) if name.startswith("test_")
    ]
    assert [name for name, n in Counter(topics).items() if n > 1] == []
    assert set(topics) == {name for name in dir(StoreContract) if name.startswith("test_")}
    assert len(topics) >= 27  # the contract of issue 23, before it was split
