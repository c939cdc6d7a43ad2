"""TokenCache: a web worker's short memory of which session a cookie token reaches.

An HTTP interaction needs only the session id, to find the user's app process; asking
the store for it costs a hop to a thread on every click. The session middleware asks
this cache instead, for htagweb's own interaction requests only. That is safe because an
interaction never starts an app process: it reaches the live process of (session, app)
or gets "reload". Rotating a session ends every process of the old id on this host
before the response that carries the new cookie starts (see rotate_session), so a click
with a stale entry reaches nothing and reloads, and a page load always asks the store.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .base import SessionStore

# Seconds a token's session id is trusted without asking the store. A user clicking
# repeatedly hits the store about once per this; kept short because within it a worker
# would not see a session deleted from the store other than by rotation.
TOKEN_CACHE_TTL = 5.0
# Entries per worker (~300 bytes each, 3 MB in all): more users than click within a TTL.
TOKEN_CACHE_ENTRIES = 10_000


class TokenCache:
    """token -> session id, each entry trusted for `ttl` seconds from when the store gave
    it (a hit never extends it, so an active user still reaches the store, and its idle
    clock, once per ttl); at most `max_entries`, the oldest going first.

    Not thread-safe: the middleware uses it from its event loop only.
    """

    def __init__(
        self,
        ttl: float = TOKEN_CACHE_TTL,
        max_entries: int = TOKEN_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries!r}")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        # In insertion order, which is expiry order (one ttl, a clock that never goes back).
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._drops = 0  # how many tokens were dropped: see mark()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> str | None:
        """The session id `token` reached less than ttl seconds ago, or None."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        session_id, expires_at = entry
        if self._clock() >= expires_at:
            del self._entries[token]
            return None
        return session_id

    def mark(self) -> int:
        """Taken before asking the store, given back to put(): an answer the store gave
        while a token was dropped may predate that drop, so it is not kept."""
        return self._drops

    def put(self, token: str, session_id: str, mark: int) -> None:
        """Note what the store just answered for `token` (only a stored session's)."""
        if not self.enabled or mark != self._drops:
            return
        now = self._clock()
        self._entries.pop(token, None)  # appended anew: the order stays the expiry order
        self._entries[token] = (session_id, now + self.ttl)
        self._prune(now)

    def drop(self, token: str) -> None:
        """Forget `token` now (its session is being rotated)."""
        self._drops += 1
        self._entries.pop(token, None)

    def _prune(self, now: float) -> None:
        # From the oldest: every entry removed was put once, so this is O(1) amortised.
        entries = self._entries
        while entries:
            _, expires_at = next(iter(entries.values()))
            if expires_at > now and len(entries) <= self.max_entries:
                return
            entries.popitem(last=False)


def token_cache_for(store: SessionStore) -> TokenCache:
    """The cache a middleware over `store` may use: none (ttl 0) unless a rotation ends
    every process the old token reaches, that is unless the store serves one host only;
    and kept well inside the store's idle expiry, so that the clicks it answers cannot
    leave an active session unrefreshed until it expires."""
    if not store.local_to_host:
        return TokenCache(ttl=0)
    return TokenCache(ttl=min(TOKEN_CACHE_TTL, store.idle_expiry / 4))
