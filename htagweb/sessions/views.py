"""Mappings over one stored session: what request.session and tag.session are.

Both check every value where it is set: a value that is not JSON, or that would make
the session too large, raises at the line of code that stored it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any

from .base import SessionStore, encode_value


class AppSession(MutableMapping[str, Any]):
    """tag.session in an app process: read at most once per interaction, written through.

    An app that never touches its session never opens the store (each connection costs
    the process memory).
    """

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self._values: dict[str, Any] | None = None

    def refresh(self) -> None:
        """Read again at next use: see what request.session wrote meanwhile."""
        self._values = None

    def _loaded(self) -> dict[str, Any]:
        if self._values is None:
            texts = self.store.load(self.session_id)
            self._values = {key: json.loads(text) for key, text in texts.items()}
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._loaded()[key]

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

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._loaded()))

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"AppSession({self._loaded()!r})"


class RequestSession(MutableMapping[str, Any]):
    """request.session in a web worker: loaded on first use, changed keys saved at the end."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self._texts: dict[str, str] | None = None
        self._values: dict[str, Any] = {}
        self._changed: dict[str, str] = {}
        self._deleted: set[str] = set()

    def _loaded(self) -> dict[str, Any]:
        if self._texts is None:
            self._texts = self.store.load(self.session_id)
            self._values = {key: json.loads(text) for key, text in self._texts.items()}
        return self._values

    def __getitem__(self, key: str) -> Any:
        return self._loaded()[key]

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

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._loaded()))

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"RequestSession({self._loaded()!r})"

    def save(self) -> None:
        """Write the keys this request changed (and only those)."""
        if self._changed or self._deleted:
            self.store.write(self.session_id, self._changed, self._deleted)
            self._changed, self._deleted = {}, set()
