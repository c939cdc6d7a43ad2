"""SQLiteStore: sessions in one SQLite file, shared by every worker and app process of a host.

The default store: nothing to install or run, and it survives restarts. WAL mode lets
readers and one writer work at once; each process opens its own connection (a
connection must not cross a fork).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .base import TOUCH_EVERY, SessionStore, entry_bytes, new_session_id, private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS data (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (session_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_by_session ON tokens(session_id);
CREATE INDEX IF NOT EXISTS sessions_by_seen ON sessions(seen);
"""
ENTRY_BYTES = "length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))"  # see entry_bytes
# Each session's size as max_bytes counts it, kept up to date by each write, so that
# checking a write costs what it touches, not the whole session. A table of its own:
# files of the previous version (whose code may still run during a deploy) keep working,
# and whenever the version is found older, the sizes are counted again.
SIZES = f"""
CREATE TABLE IF NOT EXISTS sizes (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
DELETE FROM sizes;
INSERT INTO sizes SELECT session_id, SUM({ENTRY_BYTES}) FROM data GROUP BY session_id;
"""
SCHEMA_VERSION = 3  # 1: no sizes; 2: sizes in a column of sessions (a development version)
MAX_VARIABLES = 500  # per statement: older SQLite builds allow 999
CACHE_KIB = 256  # per connection: an app process reads one small session; keep it light


class SQLiteStore(SessionStore):
    local_to_host = True  # see SessionStore.local_to_host

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(**options)
        self.path = Path(path)
        self._local = threading.local()
        self._pid = 0

    def _db(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a fork (gunicorn --preload, a template): reconnect
            self._local = threading.local()
            self._pid = os.getpid()
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            self._make_private()
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            # Every app process connects: only the first connection ever builds the schema.
            if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                _build_schema(connection)
            self._local.connection = connection
        return connection

    def _make_private(self) -> None:
        """The database 0600, before SQLite first opens it; SQLite gives its -wal and -shm
        files the database's mode when it creates them, and older ones are mended here."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for suffix in ("", "-wal", "-shm"):
            private_file(Path(f"{self.path}{suffix}"))

    def create(self, token: str, session_id: str | None = None) -> str:
        session_id = session_id or new_session_id()
        db = self._db()
        with _transaction(db):
            db.execute(
                "INSERT OR IGNORE INTO sessions (id, seen) VALUES (?, ?)", (session_id, self.now())
            )
            db.execute("INSERT INTO tokens VALUES (?, ?)", (token, session_id))
        return session_id

    def resolve(self, token: str) -> str | None:
        db = self._db()
        row = db.execute(
            "SELECT s.id, s.seen FROM tokens t JOIN sessions s ON s.id = t.session_id "
            "WHERE t.token = ?",
            (token,),
        ).fetchone()
        if row is None:
            return None
        session_id, seen = row
        now = self.now()
        if now - seen > self.idle_expiry:
            self.delete(session_id)
            return None
        if now - seen > TOUCH_EVERY:
            db.execute("UPDATE sessions SET seen = ? WHERE id = ?", (now, session_id))
        return str(session_id)

    def rotate(self, old_token: str, new_token: str) -> str | None:
        db = self._db()
        with _transaction(db, immediate=True):
            row = db.execute("SELECT session_id FROM tokens WHERE token = ?", (old_token,))
            found = row.fetchone()
            if found is None:
                return None
            old_id, session_id = found[0], new_session_id()
            db.execute("INSERT INTO sessions (id, seen) VALUES (?, ?)", (session_id, self.now()))
            db.execute("UPDATE sizes SET session_id = ? WHERE session_id = ?", (session_id, old_id))
            db.execute("UPDATE data SET session_id = ? WHERE session_id = ?", (session_id, old_id))
            db.execute(
                "UPDATE tokens SET token = ?, session_id = ? WHERE token = ?",
                (new_token, session_id, old_token),
            )
            db.execute("DELETE FROM sessions WHERE id = ?", (old_id,))  # and its other tokens
        return session_id

    def load(self, session_id: str) -> dict[str, str]:
        rows = (
            self._db()
            .execute("SELECT key, value FROM data WHERE session_id = ?", (session_id,))
            .fetchall()
        )
        return dict(rows)

    def load_keys(self, session_id: str, keys: list[str]) -> dict[str, str]:
        db = self._db()
        found: dict[str, str] = {}
        for some in _chunks(keys):
            marks = ",".join("?" * len(some))
            rows = db.execute(
                f"SELECT key, value FROM data WHERE session_id = ? AND key IN ({marks})",
                (session_id, *some),
            )
            found.update(rows.fetchall())
        return found

    def write(self, session_id: str, changed: dict[str, str], deleted: set[str]) -> None:
        db = self._db()
        with _transaction(db, immediate=True):
            row = db.execute("SELECT bytes FROM sizes WHERE session_id = ?", (session_id,))
            size = row.fetchone()
            kept = (size[0] if size else 0) - self._bytes_of(db, session_id, [*changed, *deleted])
            self.check_total(kept, changed)
            total = kept + sum(entry_bytes(key, text) for key, text in changed.items())
            db.execute(
                "INSERT OR IGNORE INTO sessions (id, seen) VALUES (?, ?)", (session_id, self.now())
            )
            db.execute("INSERT OR REPLACE INTO sizes VALUES (?, ?)", (session_id, total))
            db.executemany(
                "DELETE FROM data WHERE session_id = ? AND key = ?",
                [(session_id, key) for key in deleted],
            )
            db.executemany(
                "INSERT OR REPLACE INTO data VALUES (?, ?, ?)",
                [(session_id, key, text) for key, text in changed.items()],
            )

    @staticmethod
    def _bytes_of(db: sqlite3.Connection, session_id: str, keys: list[str]) -> int:
        """What these stored keys of the session count toward max_bytes."""
        total = 0
        for some in _chunks(keys):
            marks = ",".join("?" * len(some))
            total += db.execute(
                f"SELECT COALESCE(SUM({ENTRY_BYTES}), 0) FROM data"
                f" WHERE session_id = ? AND key IN ({marks})",
                (session_id, *some),
            ).fetchone()[0]
        return int(total)

    def delete(self, session_id: str) -> None:
        self._db().execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def purge_expired(self) -> int:
        cursor = self._db().execute(
            "DELETE FROM sessions WHERE seen < ?", (self.now() - self.idle_expiry,)
        )
        return cursor.rowcount

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._pid == os.getpid():
            connection.close()
        self._local = threading.local()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "sqlite",
            "path": str(self.path),
            "max_bytes": self.max_bytes,
            "idle_expiry": self.idle_expiry,
        }


def _build_schema(connection: sqlite3.Connection) -> None:
    """Create the tables, or bring an older file's up to date (once, whoever comes first)."""
    connection.execute("PRAGMA journal_mode=WAL")  # kept in the file from then on
    with _transaction(connection, immediate=True):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            for statement in (SCHEMA + SIZES).split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[start : start + MAX_VARIABLES] for start in range(0, len(items), MAX_VARIABLES)]


class _transaction:
    """BEGIN ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection, immediate: bool = False) -> None:
        self.db = db
        self.begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(self.begin)
        return self.db

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
