"""What a web worker refuses before anything reaches an app: requests from other sites,
and connections past their caps."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from urllib.parse import urlsplit


def origin_refusal(headers: Mapping[str, str], allowed_origins: frozenset[str]) -> str | None:
    """Why a request's Origin (or Referer) shows another site, or None when it is ours.

    Browsers send Origin on cross-site POSTs and WebSocket handshakes; requests with
    neither header (scripts, tests, server-to-server) are not browser attacks.
    """
    source = headers.get("origin") or headers.get("referer")
    if not source:
        return None
    if source == "null":  # an opaque origin: a sandboxed frame, a file:// page
        return None if "null" in allowed_origins else "request from an opaque origin"
    parts = urlsplit(source)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if origin in allowed_origins or parts.netloc.lower() == headers.get("host", "").lower():
        return None
    return f"cross-site request from {origin}"


class OpenConnections:
    """A web worker's open WebSockets and event streams, counted per session and per
    client address, each group capped (0: no cap)."""

    def __init__(self, per_session: int, per_address: int) -> None:
        self.per_session = per_session
        self.per_address = per_address
        self._sessions: collections.Counter[str] = collections.Counter()
        self._addresses: collections.Counter[str] = collections.Counter()

    def open(self, session: str, address: str) -> str | None:
        """Count one more connection; the reason it is refused (then not counted), or None."""
        if self.per_session and self._sessions[session] >= self.per_session:
            return f"over {self.per_session} connections for one session"
        if self.per_address and self._addresses[address] >= self.per_address:
            return f"over {self.per_address} connections from one address"
        self._sessions[session] += 1
        self._addresses[address] += 1
        return None

    def close(self, session: str, address: str) -> None:
        for counter, key in ((self._sessions, session), (self._addresses, address)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
