"""What the supervisor knows of each app process, and which one goes first at the cap."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from pathlib import Path

from .launchers import Launcher

LOAD_GRACE = 120.0  # a page load whose worker never said "loaded" is evictable after this


@dataclass(eq=False)
class AppProcessRecord:
    """One app process: a user's (key set) or a spare waiting for one (key "").

    The use clock is the supervisor's own, kept from what workers tell it (page loads,
    and "used" notices for interactions and connections), in time.monotonic() seconds.
    """

    key: str
    pid: int
    fqn: str
    version: int
    socket: Path
    launcher: Launcher
    loading_since: float | None = None  # a page load is under way: not to be evicted
    client_ip: str = ""  # the address whose page load started it (for per-IP limits)
    site: str = ""  # that address as fair eviction counts it (see limits.site_of)
    owner: str = ""  # the hash of its session (see runtime.session_owner)
    used_at: float = field(default_factory=time.monotonic)  # its last use of any kind
    engaged_at: float = 0.0  # when a page last interacted or connected (0: never)

    def evictable(self) -> bool:
        return self.loading_since is None or time.monotonic() - self.loading_since > LOAD_GRACE

    def note_use(self, engaged: bool) -> None:
        self.used_at = time.monotonic()
        if engaged:
            self.engaged_at = self.used_at


def eviction_rank(
    record: AppProcessRecord, shares: collections.Counter[str]
) -> tuple[bool, int, float]:
    """Lowest ends first: never engaged, then the largest site's, then least recently used.

    So a flood of page loads from one site makes room from its own processes, never by
    ending users who are active.
    """
    return record.engaged_at > 0, -shares[record.site], record.used_at


def first_to_end(
    records: collections.abc.Iterable[AppProcessRecord], keep: str
) -> AppProcessRecord | None:
    """The user process that goes first at the cap, never `keep` (the page being loaded);
    None if none may go."""
    processes = list(records)
    candidates = [r for r in processes if r.key != keep and r.evictable()]
    if not candidates:
        return None
    shares = collections.Counter(r.site for r in processes)
    return min(candidates, key=lambda r: eviction_rank(r, shares))
