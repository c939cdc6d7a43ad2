"""Mappings over one stored session: what request.session and tag.session are.

Both behave as a dict does on the desktop: a value read is decoded once and kept, so
what the code changes in place (`tag.state["cart"].append(x)`) is found, by comparing
the value's text with the stored one, and saved like an assignment: by an app process
when the code that changed it finishes, by a web worker when the response starts.
Only keys the code read or set are compared, and an app process reads from the store
only the keys its code touches, so the cost follows what the code touched.
Storing a value sessions cannot keep, or one that makes the session too large, raises
at the line that stored it; a value changed in place into one raises when it is saved.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator, MutableMapping
from typing import Any

from . import codec
from .base import SessionStore, SessionTooLarge, encode_value

logger = logging.getLogger(__name__)


class _StoredSession(MutableMapping[str, Any]):
    """One stored session as a mapping; subclasses decide how to read and write."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self._texts: dict[str, str | None] = {}  # as last read or written (None: absent)
        self._values: dict[str, Any] = {}  # the keys read or set, as the code holds them

    @abstractmethod
    def _text(self, key: str) -> str | None:
        """The stored text of `key` (None: absent), read from the store if need be."""

    @abstractmethod
    def _keys(self) -> list[str]:
        """Every key the session has."""

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            raise KeyError(key)  # keys are strings: no store may answer for 1 with "1"
        text = self._text(key)
        if key in self._values:
            return self._values[key]
        if text is None:
            raise KeyError(key)
        try:
            value = self._values[key] = codec.loads(text)
        except codec.UnreadableValue as exc:
            # Taken as absent, so the code can store it again; said, not dropped in silence.
            logger.error("session[%r] cannot be read (%s): taken as absent", key, exc)
            raise KeyError(key) from None
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"

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
        changed: dict[str, str] = {}
        refused: dict[str, TypeError] = {}
        for key, value in self._values.items():
            try:
                text = encode_value(key, value)
            except TypeError as exc:
                refused[key] = exc
                continue
            if self._texts.get(key) != text:
                changed[key] = text
        return changed, refused


class AppSession(_StoredSession):
    """tag.session in an app process: each key read at most once per interaction, only
    when the app's code touches it; written through.

    An app that never touches its session never opens the store (each connection costs
    the process memory).
    """

    def __init__(self, store: SessionStore, session_id: str) -> None:
        super().__init__(store, session_id)
        self._fresh: set[str] = set()  # keys read or written since the last refresh

    def refresh(self) -> None:
        """Read each key again at its next use, to see what request.session wrote meanwhile.
        A value the app holds stays the same object unless its stored text changed."""
        self._fresh.clear()

    def _text(self, key: str) -> str | None:
        if key not in self._fresh:
            self._note_read(key, self.store.load_keys(self.session_id, [key]).get(key))
        return self._texts[key]

    def _keys(self) -> list[str]:
        stored = self.store.load(self.session_id)
        for key in [*self._texts, *stored]:
            if key not in self._fresh:
                self._note_read(key, stored.get(key))
        return [key for key, text in self._texts.items() if text is not None]

    def _note_read(self, key: str, text: str | None) -> None:
        if text != self._texts.get(key):
            self._values.pop(key, None)  # written by another process: decoded again when read
        self._texts[key] = text
        self._fresh.add(key)

    def save_changes(self) -> None:
        """Write what the app changed in place since it was read or stored (blocking).

        A value that cannot be saved (TypeError, SessionTooLarge) is forgotten, so the
        app reads the stored one next, and the error is raised once the rest is saved.
        """
        changed, refused = self._compare()
        self._drop_overwritten(changed)
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

    def _drop_overwritten(self, changed: dict[str, str]) -> None:
        """Leave out of `changed` the keys another writer stored since the app read them
        (the app held their value from an earlier interaction): that write stands, the app
        reads it next, and the log says so."""
        unread = [key for key in changed if key not in self._fresh]
        if not unread:
            return
        stored = self.store.load_keys(self.session_id, unread)
        for key in unread:
            if stored.get(key) != self._texts.get(key):
                logger.warning(
                    "session[%r] was written elsewhere since the app read it: its change in "
                    "place is dropped, the other write stands",
                    key,
                )
                del changed[key]
                self._note_read(key, stored.get(key))

    def __setitem__(self, key: str, value: Any) -> None:
        text = encode_value(key, value)
        self.store.write(self.session_id, {key: text}, set())
        self._texts[key] = text
        self._fresh.add(key)
        self._values[key] = value  # the app's own object: changed in place later, it is saved

    def __delitem__(self, key: str) -> None:
        if self._text(key) is None:
            raise KeyError(key)
        self.store.write(self.session_id, {}, {key})
        self._texts[key] = None
        self._values.pop(key, None)


class RequestSession(_StoredSession):
    """request.session in a web worker: what the request changed is saved when the
    response starts.

    The middleware reads it ahead in a thread (`preload`) for the routes that may use it,
    so that reading it in a route does not block the event loop.
    """

    def __init__(self, store: SessionStore, session_id: str, new: bool = False) -> None:
        super().__init__(store, session_id)
        self._loaded = new  # a new session is not stored yet: nothing to read
        self._deleted: set[str] = set()  # deleted, not saved yet

    def preload(self) -> None:
        """Read the session from its store now (blocking: call it in a thread); values are
        decoded when first used."""
        if not self._loaded:
            self._texts.update(self.store.load(self.session_id))
            self._loaded = True

    def _text(self, key: str) -> str | None:
        self.preload()
        return None if key in self._deleted else self._texts.get(key)

    def _keys(self) -> list[str]:
        self.preload()
        stored = [key for key, text in self._texts.items() if text is not None]
        return [key for key in dict.fromkeys([*stored, *self._values]) if key not in self._deleted]

    @property
    def modified(self) -> bool:
        return bool(self._deleted) or bool(self.changes())

    def __setitem__(self, key: str, value: Any) -> None:
        text = encode_value(key, value)
        self.preload()
        stored = {k: t for k, t in self._texts.items() if t is not None}
        self.store.check_size(stored, {**self.changes(), key: text}, self._deleted - {key})
        self._values[key] = value
        self._deleted.discard(key)

    def __delitem__(self, key: str) -> None:
        if key not in self._values and self._text(key) is None:
            raise KeyError(key)  # (a stored value that cannot be read can still be deleted)
        self._values.pop(key, None)
        self._deleted.add(key)

    def save(self) -> None:
        """Write the keys this request changed, and only those (blocking: in a thread)."""
        changed = self.changes()
        if changed or self._deleted:
            self.store.write(self.session_id, changed, self._deleted)
            self._texts.update(changed)
            self._texts.update(dict.fromkeys(self._deleted))
            self._deleted = set()
