"""MemoryStore against the store contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_contract import StoreContract

from pat_middleware.stores import MemoryStore, Store


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        store = MemoryStore()
        yield store
        store.close()
