"""SessionStore: where session data lives, shared by web workers and app processes.

Two names per session:
- the token, a random secret carried (signed) in the browser's cookie;
- the session id, internal, never sent to a browser: data and app processes hang on it.
Rotating a session (at login, at logout) moves its data to a new token and a new id:
the old cookie stops working, and whatever still holds the old id (a request that read
the old cookie a moment before, the apps it opened) reaches an empty session.

Values are JSON, stored one row (or hash field) per key: two writers changing
different keys never undo each other. Stores know nothing of the web layer.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import stat
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from . import codec

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_IDLE_EXPIRY = 30 * 24 * 3600.0
TOUCH_EVERY = 60.0  # seconds: how often reading a session refreshes its idle clock


class SessionError(Exception):
    """Base of the errors a session raises to app code."""


class SessionTooLarge(SessionError):
    """Storing this value would make the session exceed its maximum size."""


def encode_value(key: str, value: Any) -> str:
    """Stored text of `value` (see htagweb.sessions.codec), or a TypeError naming the key,
    raised where the app stored it."""
    if not isinstance(key, str):
        raise TypeError(f"session keys are strings, not {type(key).__name__}")
    try:
        return codec.dumps(value)
    except codec.UnsupportedValue as exc:
        raise TypeError(
            f"session[{key!r}] holds {exc}: sessions keep {codec.SUPPORTED}. Store the "
            "object's data (a dict of such values) instead."
        ) from None


def entry_bytes(key: str, text: str) -> int:
    """What one key of a session counts toward max_bytes."""
    return len(key.encode()) + len(text.encode())


def private_dir(path: Path) -> Path:
    """Create `path` 0700, or make an existing one 0700: session data and keys live there."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _make_mode(path, 0o700)
    return path


def private_file(path: Path) -> None:
    """Make an existing file 0600 (nothing if it does not exist)."""
    with contextlib.suppress(FileNotFoundError):
        _make_mode(path, 0o600)


def _make_mode(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) == mode:
        return
    try:
        path.chmod(mode)
    except PermissionError:  # not ours: its owner chose who may read it
        logger.warning("cannot make %s private (mode %o): it belongs to another user", path, mode)


def new_token() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits


def new_session_id() -> str:
    return secrets.token_hex(16)


class SessionStore(ABC):
    # True for a store that only the web workers and app processes of one host use. There
    # a rotation ends every app process its old token reached, and web workers may then
    # remember which session a token reaches for a moment (sessions/token_cache.py); a
    # store shared by hosts (or one that does not say) is asked every time.
    local_to_host = False

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, idle_expiry: float = DEFAULT_IDLE_EXPIRY
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes!r}")
        if idle_expiry <= 0:
            raise ValueError(f"idle_expiry must be > 0 seconds, not {idle_expiry!r}")
        self.max_bytes = max_bytes
        self.idle_expiry = float(idle_expiry)

    # -- tokens --------------------------------------------------------------------

    @abstractmethod
    def create(self, token: str, session_id: str | None = None) -> str:
        """A new, empty session reached by `token` (with this id, or a new one); its id."""

    @abstractmethod
    def resolve(self, token: str) -> str | None:
        """The id of the live session `token` reaches, or None (unknown or expired)."""

    @abstractmethod
    def rotate(self, old_token: str, new_token: str) -> str | None:
        """Move the session of `old_token`, data included, to `new_token` and a new id.

        The old token and the old id reach nothing from then on. Returns the new id, or
        None (nothing moved) if `old_token` reaches no session.
        """

    # -- data ----------------------------------------------------------------------

    @abstractmethod
    def load(self, session_id: str) -> dict[str, str]:
        """Every key of the session, as stored text."""

    def load_keys(self, session_id: str, keys: list[str]) -> dict[str, str]:
        """These keys of the session, those it has, as stored text (stores override this to
        read only them: an app process reads the keys its code touches)."""
        stored = self.load(session_id)
        return {key: stored[key] for key in keys if key in stored}

    @abstractmethod
    def write(self, session_id: str, changed: dict[str, str], deleted: set[str]) -> None:
        """Store the changed keys (JSON text) and drop the deleted ones.

        Raises SessionTooLarge, storing nothing, if the session would exceed max_bytes.
        """

    @abstractmethod
    def delete(self, session_id: str) -> None:
        """Forget the session: its data and every token reaching it."""

    def purge_expired(self) -> int:
        """Delete sessions idle past idle_expiry; returns how many (stores with TTLs: 0)."""
        return 0

    def close(self) -> None:  # noqa: B027 (a store without connections has nothing to do)
        """Release connections (each process opens its own)."""

    # -- helpers -------------------------------------------------------------------

    def check_size(
        self, current: dict[str, str], changed: dict[str, str], deleted: set[str]
    ) -> None:
        """SessionTooLarge if `current`, so changed, would exceed max_bytes."""
        touched = changed.keys() | deleted
        kept = sum(entry_bytes(k, text) for k, text in current.items() if k not in touched)
        self.check_total(kept, changed)

    def check_total(self, kept_bytes: int, changed: dict[str, str]) -> None:
        """SessionTooLarge if `kept_bytes` of keys left as they are, plus `changed`, would
        exceed max_bytes."""
        total = kept_bytes + sum(entry_bytes(key, text) for key, text in changed.items())
        if total > self.max_bytes:
            raise SessionTooLarge(
                f"the session would hold {total} bytes, over its maximum of {self.max_bytes}"
            )

    @staticmethod
    def now() -> float:
        return time.time()

    def describe(self) -> dict[str, Any]:
        """How another process opens this same store (see open_store)."""
        raise NotImplementedError
