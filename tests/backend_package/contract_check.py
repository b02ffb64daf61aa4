"""The contract kit on the kitdemo backend, as the backend's own test suite would run it.

Each class opens stores by URL, so the kit judges whatever ``open_store``
finds for the scheme: the good backend must pass everything, each broken
variant must fail the one rule it breaks.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from wa_session_store import open_store
from wa_session_store.store.base import BaseStore
from wa_session_store.testing import StoreContract


class _ByScheme(StoreContract):
    scheme = "kitdemo"

    @pytest.fixture
    def make_store(self) -> Any:
        url = f"{self.scheme}://{uuid.uuid4().hex}"  # a fresh database per test

        def make(**options: Any) -> BaseStore:
            return open_store(url, **options)

        return make


class TestKitdemo(_ByScheme):
    scheme = "kitdemo"


class TestVersionless(_ByScheme):
    scheme = "kitdemo-versionless"


class TestTornBatch(_ByScheme):
    scheme = "kitdemo-torn"
