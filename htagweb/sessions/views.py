"""Mappings over one stored session: what request.session and tag.session are.

Both check every value where it is set: a value that is not JSON, or that would make
the session too large, raises at the line of code that stored it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

from .base import SessionStore, encode_value


class _StoredSession(MutableMapping[str, Any]):
    """Reads one session from its store on first use; subclasses decide how to write."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self._texts: dict[str, str] | None = None  # as stored (JSON text)
        self._values: dict[str, Any] | None = None  # decoded from _texts at first use

    def _read(self) -> dict[str, str]:
        if self._texts is None:
            self._texts = self.store.load(self.session_id)
            self._values = None
        return self._texts

    def _loaded(self) -> dict[str, Any]:
        texts = self._read()
        if self._values is None:
            self._values = {key: json.loads(text) for key, text in texts.items()}
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._loaded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._loaded()))

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._loaded()!r})"


class AppSession(_StoredSession):
    """tag.session in an app process: read at most once per interaction, written through.

    An app that never touches its session never opens the store (each connection costs
    the process memory).
    """

    def refresh(self) -> None:
        """Read again at next use: see what request.session wrote meanwhile."""
        self._texts = self._values = None

    def __setitem__(self, key: str, value: Any) -> None:
        text = encode_value(key, value)
        values = self._loaded()
        self.store.write(self.session_id, {key: text}, set())
        values[key] = json.loads(text)  # what is stored, not the caller's object

    def __delitem__(self, key: str) -> None:
        values = self._loaded()
        if key not in values:
            raise KeyError(key)
        self.store.write(self.session_id, {}, {key})
        del values[key]


class RequestSession(_StoredSession):
    """request.session in a web worker: changed keys are saved when the response starts.

    The middleware reads it ahead in a thread (`preload`) for the routes that may use it,
    so that reading it in a route does not block the event loop.
    """

    def __init__(self, store: SessionStore, session_id: str, new: bool = False) -> None:
        super().__init__(store, session_id)
        if new:
            self._texts = {}  # not stored yet: nothing to read
        self._changed: dict[str, str] = {}
        self._deleted: set[str] = set()

    def preload(self) -> None:
        """Read the session from its store now (blocking: call it in a thread); values are
        decoded when first used."""
        self._read()

    @property
    def modified(self) -> bool:
        return bool(self._changed or self._deleted)

    def __setitem__(self, key: str, value: Any) -> None:
        values = self._loaded()
        text = encode_value(key, value)
        assert self._texts is not None
        self.store.check_size(self._texts, {**self._changed, key: text}, self._deleted - {key})
        values[key] = json.loads(text)
        self._changed[key] = text
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        values = self._loaded()
        del values[key]
        self._changed.pop(key, None)
        self._deleted.add(key)

    def save(self) -> None:
        """Write the keys this request changed, and only those (blocking: in a thread)."""
        if self.modified:
            self.store.write(self.session_id, self._changed, self._deleted)
            self._changed, self._deleted = {}, set()
