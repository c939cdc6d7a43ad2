"""The pages an app process serves: their push connections, and their last answers.

Each browser page has a random id ("page") and numbers its interactions ("seq"). A page
that lost an answer sends the interaction again: it gets the answer it missed instead of
the interaction running twice.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..wire.ipc import encode_frame
from ..wire.messages import AppReply

if TYPE_CHECKING:
    from .parano import PageCipher

PAGES_REMEMBERED = 64  # pages whose last interaction number is kept (for resends)
SHARED_ACTIONS = ("update", "stream", "post")  # what other tabs of an instance are sent


class Subscriber:
    """A connection receiving pushes: the page it serves and the instance that page shows."""

    __slots__ = ("instance", "page")

    def __init__(self, instance: str, page: str | None) -> None:
        self.instance = instance
        self.page = page


class LivePages:
    """The connections of live pages (a WebSocket, or an HTTP page's event stream) and the
    last answer given to each page."""

    def __init__(self, cipher_of: Callable[[str | None], PageCipher | None]) -> None:
        self._cipher_of = cipher_of  # parano mode: a page's keys, if it agreed some
        self.sealed_only = False  # parano mode: pages without keys get no pushes
        self.subscribers: dict[asyncio.StreamWriter, Subscriber] = {}
        self._answers: collections.OrderedDict[str, tuple[int, dict[str, Any]]] = (
            collections.OrderedDict()
        )

    def subscribe(self, writer: asyncio.StreamWriter, subscriber: Subscriber) -> None:
        """`writer` now takes its page's pushes; an older connection of the same page (half
        open after a network change) gets none from now on, lest sealed pushes use up the
        new keys' counters."""
        if subscriber.page is not None:
            for other, known in list(self.subscribers.items()):
                if known.page == subscriber.page:
                    del self.subscribers[other]
        self.subscribers[writer] = subscriber

    def pages(self) -> set[str | None]:
        return {s.page for s in self.subscribers.values()}

    def showing(self, instance: str) -> list[asyncio.StreamWriter]:
        return [w for w, s in self.subscribers.items() if s.instance == instance]

    def move_to(self, instance: str, subscriber: Subscriber | None, page: str | None) -> None:
        """A page showed an older instance: its connections now show `instance`."""
        for other in self.subscribers.values():  # its socket, or its event stream
            if other is subscriber or (page is not None and other.page == page):
                other.instance = instance

    # -- answers, for resent interactions --------------------------------------------------

    def answer_of(self, page: Any, seq: Any) -> dict[str, Any] | None:
        """The answer to an interaction this page sent before; None for a new one."""
        if not isinstance(page, str) or type(seq) is not int:
            return None  # not numbered: a client other than htagweb's
        last = self._answers.get(page)
        if last is None or seq > last[0]:
            return None
        return numbered(dict(last[1]), seq) if seq == last[0] else numbered({}, seq)

    def remember(self, page: Any, seq: Any, actions: dict[str, Any]) -> None:
        if not isinstance(page, str) or type(seq) is not int:
            return
        self._answers[page] = (seq, actions)
        self._answers.move_to_end(page)
        while len(self._answers) > PAGES_REMEMBERED:
            self._answers.popitem(last=False)

    # -- pushes ----------------------------------------------------------------------------

    def broadcast(
        self,
        instance: str,
        actions: dict[str, Any],
        exclude: asyncio.StreamWriter,
        page: str | None,
    ) -> None:
        """Keep other tabs showing `instance` in step (without driving generators).

        The page that interacted gets the answer itself, over HTTP or its WebSocket:
        its event stream, if it has one, is left out.
        """
        others = [
            w
            for w in self.showing(instance)
            if w is not exclude and (page is None or self.subscribers[w].page != page)
        ]
        shared = {k: v for k, v in actions.items() if k in SHARED_ACTIONS}
        if others and shared:
            self.send(others, shared)

    def send(self, writers: list[asyncio.StreamWriter], actions: dict[str, Any]) -> None:
        """Push `actions` to pages: sealed for each page that agreed on keys."""
        plain = None
        for writer in writers:
            cipher = self._cipher_of(self.subscribers[writer].page)
            if cipher is not None:
                sealed = cipher.seal_push(json.dumps(actions).encode())
                push: AppReply = {"kind": "sealed", "sealed": sealed}
                writer.write(encode_frame(push))
            elif not self.sealed_only:
                plain = plain or encode_frame({"kind": "actions", "actions": actions})
                writer.write(plain)


def numbered(actions: dict[str, Any], seq: Any) -> dict[str, Any]:
    """The answer to interaction `seq`: the page drops it from the ones it may resend."""
    if seq is not None:
        actions["seq"] = seq
    return actions
