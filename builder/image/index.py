"""The store's SQLite index (WAL, shared by every builder process on the store): one connection
per thread, write transactions that take the lock up front, and the schema with its upgrades."""
from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from builder.errors import StoreError

# 2: rows of `layers` are only written after hashing; v1 rows (taken from configs) are dropped.
# 3: `diffs` (what the builder knows of each uncompressed layer) and `variants` (compressed forms
#    made on demand); a layer the builder wrote needs no blob, its snapshot dir is its content.
# 4: `lazy_layers`, blobs a build took from a shared cache and will fetch when read (lazy.py).
# 5: `diffs.signature`, the snapshot dir's signature when its tar was hashed (builder.layer.treesig).
SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    manifest_digest TEXT PRIMARY KEY,
    config_digest   TEXT NOT NULL,
    created         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_config ON images(config_digest);
CREATE TABLE IF NOT EXISTS tags (
    name            TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    updated         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layers (
    blob_digest TEXT PRIMARY KEY,
    diff_id     TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS layers_diff_id ON layers(diff_id);
CREATE TABLE IF NOT EXISTS snapshots (
    n         INTEGER PRIMARY KEY AUTOINCREMENT,
    diff_id   TEXT NOT NULL UNIQUE,
    created   REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS diffs (
    diff_id  TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,   -- bytes of the uncompressed tar
    from_dir INTEGER NOT NULL,   -- 1: the builder wrote this tar from the snapshot dir, and can again
    epoch    INTEGER,            -- the SOURCE_DATE_EPOCH it was written with (NULL: none)
    signature TEXT               -- from_dir: the dir's signature when its tar hashed to diff_id
);
CREATE TABLE IF NOT EXISTS variants (
    diff_id     TEXT NOT NULL,
    compression TEXT NOT NULL,
    level       INTEGER NOT NULL,
    blob_digest TEXT NOT NULL,
    size        INTEGER NOT NULL,
    PRIMARY KEY (diff_id, compression, level)
);
CREATE TABLE IF NOT EXISTS lazy_layers (
    blob_digest TEXT PRIMARY KEY,
    diff_id     TEXT NOT NULL,   -- as the cache record claims it, checked when the bytes come
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    origin      TEXT NOT NULL,   -- JSON: where to fetch it (a registry repository, an OCI layout dir)
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cache (
    key       TEXT PRIMARY KEY,
    value     TEXT NOT NULL,
    created   REAL NOT NULL,
    last_used REAL NOT NULL
);
"""


class StoreIndex:
    def __init__(self, db_path: Path, store_root: Path) -> None:
        self.db_path = db_path
        self.store_root = store_root
        self._local = threading.local()

    def db(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            try:
                conn = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA busy_timeout=60000")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the store index {self.db_path}: {exc}") from exc
            local.conn = conn
            local.pid = os.getpid()
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE takes the write lock up front so it never deadlocks."""
        conn = self.db()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot update the store index {self.db_path}: {exc}",
                             hint="another process may hold it locked for too long, or the disk is full") from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"cannot update the store index {self.db_path}: {exc}") from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(f"cannot update the store index {self.db_path}: {exc}",
                             hint="the disk may be full") from exc

    def initialise(self) -> None:
        """Create or upgrade the schema (WAL mode, tables, migrations)."""
        conn = self.db()
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                with self.tx() as tx:
                    version = tx.execute("PRAGMA user_version").fetchone()[0]
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            tx.execute(statement)
                    columns = {row[1] for row in tx.execute("PRAGMA table_info(diffs)")}
                    if "signature" not in columns:  # a diffs table of schema 3 or 4
                        tx.execute("ALTER TABLE diffs ADD COLUMN signature TEXT")
                    if version == 1:
                        # v1 recorded the blob -> diff_id pairs configs claimed, unchecked: forget
                        # them; each is learnt again by hashing its blob when it is next needed.
                        tx.execute("DELETE FROM layers")
                    tx.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(f"the store at {self.store_root} was created by a newer builder (schema {version})")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the store index {self.db_path} is unreadable: {exc}") from exc
