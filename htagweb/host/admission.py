"""Per-address limits on page loads: new sessions a minute, and live app processes."""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterator

from ..limits import RateLimit
from ..wire.messages import ClientLimits

logger = logging.getLogger(__name__)

MAX_TRACKED_ADDRESSES = 100_000  # client addresses whose new-session rate is followed


class LimitReached(Exception):
    """A per-address limit refuses this page load (the text is safe to show)."""


class Admission:
    """Decides whether a page load from an address may open a session or start a process.

    Limits travel with each page load (ClientLimits), as the Runner serving it has them.
    """

    def __init__(self, live_processes_of: Callable[[str], int]) -> None:
        # Processes of an address that run now (checked in /proc by the supervisor: the
        # notice that one ended may still be on its way).
        self._live_processes_of = live_processes_of
        self._new_sessions: collections.OrderedDict[str, RateLimit] = collections.OrderedDict()
        # Counted as an address's until its process is in the table: parallel page loads
        # from one address, each waiting for its fork, cannot all pass the limit.
        self.starting: collections.Counter[str] = collections.Counter()

    def admit_new_session(self, client: ClientLimits) -> None:
        per_minute = float(client.get("new_sessions_per_minute") or 0)
        if per_minute <= 0:
            return
        ip = str(client.get("ip", ""))
        bucket = self._new_sessions.get(ip)
        if bucket is None or bucket.rate != per_minute / 60:
            bucket = self._new_sessions[ip] = RateLimit(per_minute / 60, capacity=per_minute)
        self._new_sessions.move_to_end(ip)
        while len(self._new_sessions) > MAX_TRACKED_ADDRESSES:
            self._new_sessions.popitem(last=False)  # the longest quiet: its bucket is full
        if not bucket.allow():
            logger.warning("refused a new session for %s: over %s a minute", ip, per_minute)
            raise LimitReached("too many new sessions from this address")

    def admit_new_process(self, client: ClientLimits) -> None:
        limit = int(client.get("max_processes") or 0)
        ip = str(client.get("ip", ""))
        if limit <= 0:
            return
        if self._live_processes_of(ip) + self.starting[ip] >= limit:
            logger.warning("refused a new app process for %s: %s live already", ip, limit)
            raise LimitReached("too many apps open from this address")

    @contextlib.contextmanager
    def forking(self, address: str) -> Iterator[None]:
        """A process for `address` is being forked: it counts toward its limit already."""
        self.starting[address] += 1
        try:
            yield
        finally:
            self.starting[address] -= 1
            if not self.starting[address]:
                del self.starting[address]
