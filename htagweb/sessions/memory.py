"""MemoryStore: sessions in one process's memory, for tests.

App processes cannot reach another process's memory: with this store each of them
keeps its own sessions, not shared with request.session. Use SQLiteStore (the
default) or RedisStore for anything else.
"""

from __future__ import annotations

import threading
from typing import Any

from .base import SessionStore, new_session_id


class MemoryStore(SessionStore):
    local_to_host = True  # see SessionStore.local_to_host

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self._data: dict[str, dict[str, str]] = {}
        self._seen: dict[str, float] = {}

    def create(self, token: str, session_id: str | None = None) -> str:
        session_id = session_id or new_session_id()
        with self._lock:
            self._tokens[token] = session_id
            self._data.setdefault(session_id, {})  # an app may have written into it already
            self._seen[session_id] = self.now()
        return session_id

    def resolve(self, token: str) -> str | None:
        with self._lock:
            session_id = self._tokens.get(token)
            if session_id is None:
                return None
            if self.now() - self._seen[session_id] > self.idle_expiry:
                self._forget(session_id)
                return None
            self._seen[session_id] = self.now()
            return session_id

    def rotate(self, old_token: str, new_token: str) -> str | None:
        with self._lock:
            old_id = self._tokens.get(old_token)
            if old_id is None:
                return None
            data = self._data.get(old_id, {})
            self._forget(old_id)
            session_id = new_session_id()
            self._tokens[new_token] = session_id
            self._data[session_id] = data
            self._seen[session_id] = self.now()
            return session_id

    def load(self, session_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self._data.get(session_id, {}))

    def load_keys(self, session_id: str, keys: list[str]) -> dict[str, str]:
        with self._lock:
            stored = self._data.get(session_id, {})
            return {key: stored[key] for key in keys if key in stored}

    def write(self, session_id: str, changed: dict[str, str], deleted: set[str]) -> None:
        with self._lock:
            current = self._data.setdefault(session_id, {})
            self.check_size(current, changed, deleted)
            for key in deleted:
                current.pop(key, None)
            current.update(changed)
            self._seen[session_id] = self.now()

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._forget(session_id)

    def _forget(self, session_id: str) -> None:
        self._data.pop(session_id, None)
        self._seen.pop(session_id, None)
        for token in [t for t, s in self._tokens.items() if s == session_id]:
            del self._tokens[token]

    def purge_expired(self) -> int:
        with self._lock:
            limit = self.now() - self.idle_expiry
            expired = [s for s, seen in self._seen.items() if seen < limit]
            for session_id in expired:
                self._forget(session_id)
        return len(expired)

    def describe(self) -> dict[str, Any]:
        return {"kind": "memory", "max_bytes": self.max_bytes, "idle_expiry": self.idle_expiry}
