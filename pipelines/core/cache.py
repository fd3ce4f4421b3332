"""A thread-safe, least-recently-used cache under a byte budget, where each value is created once.

Shared by the model cache (loader.py) and the metrics feature cache: two requests for the same key wait
for one creation, and an entry is stored before its key lock is released so a late request finds it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class KeyedCache:
    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.RLock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def loaded_keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def values(self) -> list[Any]:
        with self._lock:
            return [value for value, _ in self._entries.values()]

    def used_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def _lookup(self, key: Hashable) -> tuple[bool, Any]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return True, self._entries[key][0]
        return False, None

    def get_or_create(self, key: Hashable, create: Callable[[], tuple[Any, int]], budget: int | None = None) -> Any:
        """The cached value of `key`, or `create()` -> (value, size in bytes) stored under the budget."""
        found, value = self._lookup(key)
        if found:
            return value
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            found, value = self._lookup(key)
            if found:
                return value
            try:
                value, size = create()
                with self._lock:
                    self._entries[key] = (value, size)
                    limit = self.budget_bytes if self.budget_bytes is not None else budget
                    if limit is not None:
                        self._evict(limit, keep=key)
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            return value

    def _evict(self, budget: int, keep: Hashable) -> None:
        evicted = []
        while self.used_bytes() > budget and len(self._entries) > 1:
            oldest = next(iter(self._entries))
            if oldest == keep:
                break
            evicted.append((oldest, self._entries.pop(oldest)[0]))
        if evicted:
            self.on_evicted(evicted)

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop the entries whose key matches (e.g. other variants of a model about to be loaded); returns how many."""
        with self._lock:
            dropped = [(key, self._entries.pop(key)[0]) for key in list(self._entries) if predicate(key)]
        if dropped:
            self.on_evicted(dropped)
        return len(dropped)

    def on_evicted(self, evicted: list[tuple[Hashable, Any]]) -> None:
        """Called after entries were dropped for space (subclasses free resources or log)."""

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
