"""A persistent map from a file's stat signature to the sha256 of its content.

Hashing a large context on every build is the slow part of cache-key computation; a file whose
(device, inode, size, mtime, ctime, mode) did not change has the same bytes, so its digest is
looked up instead of re-read. ctime is part of the key because it moves on every write *and* on
chmod/chown/rename, which an mtime-restoring tool cannot fake.

The file's extended attributes are kept beside its digest (setting or removing one moves ctime
too), so a build with a warm cache makes no listxattr call per file either.

The cache is an optimisation only: a corrupt, locked or unwritable database makes every call a
miss (and `remember` a no-op); it never fails a build. SQLite in WAL mode with a busy timeout lets
several builder processes share one file.

Known limit (as with git's "racy" index entries): a file rewritten to the same size within the
file system's timestamp granularity after being hashed keeps its old digest. ext4/xfs/btrfs keep
nanosecond timestamps, so the window is a few milliseconds.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

StatKey = tuple[int, int, int, int, int, int]
Xattrs = list[tuple[str, bytes]]
# (content sha256, xattrs as read with the stat signature, or None when not recorded)
Known = tuple[str, "Xattrs | None"]

# v1 (`content_digest`, without xattrs) is left behind: its rows are hashed again once.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_digest (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    xattrs TEXT,
    PRIMARY KEY (dev, ino)
);
CREATE TABLE IF NOT EXISTS dir_digest (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    signature TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
)
"""


def encode_xattrs(xattrs: Xattrs) -> str:
    return json.dumps([[name, value.hex()] for name, value in xattrs]) if xattrs else ""


def decode_xattrs(text: str | None) -> Xattrs | None:
    if text is None:
        return None
    if not text:
        return []
    try:
        return [(str(name), bytes.fromhex(value)) for name, value in json.loads(text)]
    except (ValueError, TypeError):
        return None  # unreadable: read from the file again


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class StatCache:
    """`lookup(st) -> sha256 | None`, `remember(st, sha256)`; safe to share between processes."""

    def __init__(self, path: Path, *, timeout: float = 2.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple] = []
        self._pending_dirs: list[tuple[int, int, str, str]] = []
        self._open()

    # opening and recovery ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self._timeout, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        db.execute("DROP TABLE IF EXISTS content_digest")
        db.commit()
        db.execute("SELECT count(*) FROM file_digest LIMIT 1").fetchone()
        return db

    def _open(self) -> None:
        try:
            self._db = self._connect()
            return
        except sqlite3.DatabaseError as exc:
            corrupt = "malformed" in str(exc) or "not a database" in str(exc)
        except (sqlite3.Error, OSError):
            self._db = None
            return
        if corrupt:
            # A damaged file holds nothing worth keeping: move it aside and start over.
            try:
                os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
                for suffix in ("-wal", "-shm"):
                    side = self.path.with_name(self.path.name + suffix)
                    if side.exists():
                        side.unlink()
                self._db = self._connect()
            except (sqlite3.Error, OSError):
                self._db = None

    @property
    def usable(self) -> bool:
        return self._db is not None

    # the map ------------------------------------------------------------------------------

    def lookup(self, st: os.stat_result) -> str | None:
        if self._db is None:
            return None
        dev, ino, size, mtime_ns, ctime_ns, mode = stat_key(st)
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT size, mtime_ns, ctime_ns, mode, sha256 FROM file_digest"
                    " WHERE dev = ? AND ino = ?",
                    (dev, ino),
                ).fetchone()
        except sqlite3.Error:
            return None
        if row is None or tuple(row[:4]) != (size, mtime_ns, ctime_ns, mode):
            return None
        return row[4]

    def lookup_many(self, stats: list[os.stat_result]) -> dict[tuple[int, int], Known]:
        """`lookup` for many files in a few queries (a directory's files at once):
        (dev, ino) -> (sha256, xattrs or None) for those whose signature still matches."""
        if self._db is None or not stats:
            return {}
        wanted = {(st.st_dev, st.st_ino): stat_key(st) for st in stats}
        by_dev: dict[int, list[int]] = {}
        for dev, ino in wanted:
            by_dev.setdefault(dev, []).append(ino)
        found: dict[tuple[int, int], Known] = {}
        try:
            with self._lock:
                for dev, inodes in by_dev.items():
                    for start in range(0, len(inodes), 500):  # SQLite's limit on bound values
                        chunk = inodes[start : start + 500]
                        rows = self._db.execute(
                            "SELECT ino, size, mtime_ns, ctime_ns, mode, sha256, xattrs FROM file_digest"
                            f" WHERE dev = ? AND ino IN ({','.join('?' * len(chunk))})",
                            (dev, *chunk),
                        ).fetchall()
                        for ino, size, mtime_ns, ctime_ns, mode, sha256, xattrs in rows:
                            if wanted[(dev, ino)][2:] == (size, mtime_ns, ctime_ns, mode):
                                found[(dev, ino)] = (sha256, decode_xattrs(xattrs))
        except sqlite3.Error:
            return {}
        return found

    def remember(self, st: os.stat_result, sha256: str, xattrs: Xattrs | None = None) -> None:
        """Queue an entry (`xattrs`: read after `st` was taken, or None); written in batches
        (and on `flush`/`close`) to keep commits few."""
        if self._db is None:
            return
        self._pending.append((*stat_key(st), sha256, None if xattrs is None else encode_xattrs(xattrs)))
        if len(self._pending) >= 500:
            self.flush()

    def lookup_dir(self, st: os.stat_result, signature: str) -> str | None:
        """The digest recorded for this dir with this signature (see BuildContext._dir_digest)."""
        if self._db is None:
            return None
        try:
            with self._lock:
                row = self._db.execute("SELECT signature, digest FROM dir_digest WHERE dev = ? AND ino = ?",
                                       (st.st_dev, st.st_ino)).fetchone()
        except sqlite3.Error:
            return None
        return row[1] if row is not None and row[0] == signature else None

    def remember_dir(self, st: os.stat_result, signature: str, digest: str) -> None:
        if self._db is None:
            return
        self._pending_dirs.append((st.st_dev, st.st_ino, signature, digest))
        if len(self._pending_dirs) >= 500:
            self.flush()

    def flush(self) -> None:
        if self._db is None or not (self._pending or self._pending_dirs):
            self._pending.clear()
            self._pending_dirs.clear()
            return
        rows, self._pending = self._pending, []
        dirs, self._pending_dirs = self._pending_dirs, []
        try:
            with self._lock:
                self._db.executemany(
                    "INSERT OR REPLACE INTO file_digest"
                    " (dev, ino, size, mtime_ns, ctime_ns, mode, sha256, xattrs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO dir_digest (dev, ino, signature, digest) VALUES (?, ?, ?, ?)", dirs)
                self._db.commit()
        except sqlite3.Error:
            # Locked past the timeout or broken: these digests are just recomputed next time.
            try:
                self._db.rollback()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def __enter__(self) -> "StatCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
