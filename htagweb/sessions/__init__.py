"""Sessions: one session per browser, shared by web workers and the user's app processes.

Pick a store with Runner(session_store=...): SQLiteStore (the default, one host),
RedisStore (several hosts) or MemoryStore (one process, for tests).
"""

from __future__ import annotations

from typing import Any

from .base import SessionError, SessionStore, SessionTooLarge
from .memory import MemoryStore
from .sqlite import SQLiteStore


def open_store(description: dict[str, Any]) -> SessionStore:
    """The store `SessionStore.describe()` described, opened in this process."""
    options = {k: description[k] for k in ("max_bytes", "idle_expiry")}
    kind = description["kind"]
    if kind == "sqlite":
        return SQLiteStore(description["path"], **options)
    if kind == "redis":
        from .redis import RedisStore

        return RedisStore(description["url"], prefix=description["prefix"], **options)
    if kind == "memory":
        return MemoryStore(**options)
    raise ValueError(f"unknown session store kind {kind!r}")


def __getattr__(name: str) -> Any:
    if name == "RedisStore":  # imported on demand: redis is an optional extra
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(name)


__all__ = [
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "SessionError",
    "SessionStore",
    "SessionTooLarge",
    "open_store",
]
