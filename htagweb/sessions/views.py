"""Mappings over one stored session: what request.session and tag.session are.

Both behave as a dict does on the desktop: a value read is decoded once and kept, so
what the app changes in place (`tag.state["cart"].append(x)`) is found, by comparing
the value's text with the stored one, and saved like an assignment: by an app process
when the code that changed it finishes, by a web worker when the response starts.
Only keys the code read or set are compared, so the cost follows what it touched.
Storing a value sessions cannot keep, or one that makes the session too large, raises
at the line that stored it; a value changed in place into one raises when it is saved.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from . import codec
from .base import SessionStore, SessionTooLarge, encode_value


class _StoredSession(MutableMapping[str, Any]):
    """Reads one session from its store on first use; subclasses decide how to write."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self._texts: dict[str, str] | None = None  # as stored, when last read or written
        self._values: dict[str, Any] = {}  # the keys read or set, as the code holds them
        self._deleted: set[str] = set()  # deleted, not saved yet (request.session)

    def _read(self) -> dict[str, str]:
        if self._texts is None:
            self._texts = self.store.load(self.session_id)
        return self._texts

    def changes(self) -> dict[str, str]:
        """The keys read or set whose value now differs from what is stored, as text.

        TypeError for a value changed in place into one that sessions cannot keep.
        """
        changed, refused = self._compare()
        if refused:
            raise next(iter(refused.values()))
        return changed

    def _compare(self) -> tuple[dict[str, str], dict[str, TypeError]]:
        """(the changed keys as text, the keys whose value sessions cannot keep)."""
        stored = self._texts or {}
        changed: dict[str, str] = {}
        refused: dict[str, TypeError] = {}
        for key, value in self._values.items():
            try:
                text = encode_value(key, value)
            except TypeError as exc:
                refused[key] = exc
                continue
            if stored.get(key) != text:
                changed[key] = text
        return changed, refused

    def __getitem__(self, key: str) -> Any:
        texts = self._read()
        if key in self._values:
            return self._values[key]
        if key in self._deleted:
            raise KeyError(key)
        value = self._values[key] = codec.loads(texts[key])
        return value

    def _keys(self) -> list[str]:
        keys = dict.fromkeys([*self._read(), *self._values])
        return [key for key in keys if key not in self._deleted]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"


class AppSession(_StoredSession):
    """tag.session in an app process: read at most once per interaction, written through.

    An app that never touches its session never opens the store (each connection costs
    the process memory).
    """

    def __init__(self, store: SessionStore, session_id: str) -> None:
        super().__init__(store, session_id)
        self._stale = False

    def refresh(self) -> None:
        """Read again at next use, to see what request.session wrote meanwhile. A value the
        app holds stays the same object unless its stored text changed."""
        self._stale = True

    def _read(self) -> dict[str, str]:
        if self._texts is not None and not self._stale:
            return self._texts
        fresh = self.store.load(self.session_id)
        previous = self._texts or {}
        for key in [k for k in self._values if fresh.get(k) != previous.get(k)]:
            del self._values[key]  # written by another process: decoded again when read
        self._texts, self._stale = fresh, False
        return fresh

    def save_changes(self) -> None:
        """Write what the app changed in place since it was read or stored (blocking).

        A value that cannot be saved (TypeError, SessionTooLarge) is forgotten, so the
        app reads the stored one next, and the error is raised once the rest is saved.
        """
        if self._texts is None:
            return  # never read: nothing changed
        changed, refused = self._compare()
        try:
            if changed:
                self.store.write(self.session_id, changed, set())
                self._texts.update(changed)
        except SessionTooLarge:
            for key in changed:
                del self._values[key]
            raise
        for key in refused:
            del self._values[key]
        if refused:
            raise TypeError("; ".join(str(exc) for exc in refused.values()))

    def __setitem__(self, key: str, value: Any) -> None:
        text = encode_value(key, value)
        texts = self._read()
        self.store.write(self.session_id, {key: text}, set())
        texts[key] = text
        self._values[key] = value  # the app's own object: changed in place later, it is saved

    def __delitem__(self, key: str) -> None:
        texts = self._read()
        if key not in texts:
            raise KeyError(key)
        self.store.write(self.session_id, {}, {key})
        del texts[key]
        self._values.pop(key, None)


class RequestSession(_StoredSession):
    """request.session in a web worker: what the request changed is saved when the
    response starts.

    The middleware reads it ahead in a thread (`preload`) for the routes that may use it,
    so that reading it in a route does not block the event loop.
    """

    def __init__(self, store: SessionStore, session_id: str, new: bool = False) -> None:
        super().__init__(store, session_id)
        if new:
            self._texts = {}  # not stored yet: nothing to read

    def preload(self) -> None:
        """Read the session from its store now (blocking: call it in a thread); values are
        decoded when first used."""
        self._read()

    @property
    def modified(self) -> bool:
        return bool(self._deleted) or bool(self.changes())

    def __setitem__(self, key: str, value: Any) -> None:
        text = encode_value(key, value)
        texts = self._read()
        self.store.check_size(texts, {**self.changes(), key: text}, self._deleted - {key})
        self._values[key] = value
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        self[key]  # KeyError if it is not there
        del self._values[key]
        self._deleted.add(key)

    def save(self) -> None:
        """Write the keys this request changed, and only those (blocking: in a thread)."""
        changed = self.changes()
        if changed or self._deleted:
            self.store.write(self.session_id, changed, self._deleted)
            texts = self._read()
            texts.update(changed)
            for key in self._deleted:
                texts.pop(key, None)
            self._deleted = set()
