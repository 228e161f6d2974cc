"""The step cache: the solver's entries by key (JSON values the store does not interpret, but
for finding the digests they mention when it collects garbage)."""
from __future__ import annotations

import json
import time
from typing import Iterable

from builder.image.index import StoreIndex


class StepCache:
    def __init__(self, index: StoreIndex) -> None:
        self.index = index

    def cache_get(self, key: str, *, touch: bool = True) -> dict | None:
        """A step-cache value; `touch` marks it used now (else call cache_touch later, in bulk)."""
        row = self.index.db().execute("SELECT value, last_used FROM cache WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        if touch and time.time() - row[1] > 60:  # coarse: avoids a write transaction per cache hit
            self.cache_touch([key])
        return json.loads(row[0])

    def cache_touch(self, keys: Iterable[str]) -> None:
        """Mark entries used now, in one transaction (prune forgets entries unused for long)."""
        now = time.time()
        rows = [(now, key, now - 60) for key in keys]
        if rows:
            with self.index.tx() as tx:
                tx.executemany("UPDATE cache SET last_used=? WHERE key=? AND last_used<?", rows)

    def cache_put(self, key: str, value: dict) -> None:
        self.cache_put_many([(key, value)])

    def cache_put_many(self, items: Iterable[tuple[str, dict]]) -> None:
        """Write step-cache entries in one transaction (one fsync however many)."""
        now = time.time()
        rows = [(key, json.dumps(value, sort_keys=True, separators=(",", ":")), now, now) for key, value in items]
        if rows:
            with self.index.tx() as tx:
                tx.executemany("INSERT INTO cache(key, value, created, last_used) VALUES (?,?,?,?) "
                               "ON CONFLICT(key) DO UPDATE SET value=excluded.value, last_used=excluded.last_used",
                               rows)

    def cache_delete(self, key: str) -> bool:
        with self.index.tx() as tx:
            return tx.execute("DELETE FROM cache WHERE key=?", (key,)).rowcount > 0

    def cache_prune(self, *, unused_for: float) -> int:
        """Forget cache entries not used for `unused_for` seconds; returns how many."""
        with self.index.tx() as tx:
            return tx.execute("DELETE FROM cache WHERE last_used < ?", (time.time() - unused_for,)).rowcount

    def cache_entries(self) -> list[tuple[str, dict, float]]:
        return [(k, json.loads(v), lu) for k, v, lu in
                self.index.db().execute("SELECT key, value, last_used FROM cache ORDER BY key")]
