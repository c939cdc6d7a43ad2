"""The door to a user's app process: the one way every endpoint reaches it.

A door renders a fresh instance for a page load, carries one interaction, and connects
a page for pushes (and, from a WebSocket page, its interactions). The local door is
htagweb.web.gateway.Gateway (app processes of this host, through its supervisor); an
app process on another host is another door behind the same interface.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Protocol

from ..appref import AppRef
from ..wire.messages import (
    AppReply,
    AppRequest,
    ClientLimits,
    HandshakeRequest,
    InteractRequest,
    RenderRequest,
)

DEADLINE_GRACE = 5.0  # the app process ends itself at its deadline; a worker waits this longer


class AppProcessError(RuntimeError):
    """An app process could not answer."""


class AppGone(AppProcessError):
    """No app process runs for this (session, app): the page must be loaded again."""


class AppDied(AppProcessError):
    """The app process ended while handling the request (its deadline, or a crash)."""


class AppTimeout(AppDied):
    """The app process did not answer in time; it has been ended."""


class ClientLimited(AppProcessError):
    """A per-address limit refused the page load (the reason is safe to show)."""


class SupervisorError(AppProcessError):
    """The supervisor could not be started or reached."""


def worker_deadline(timeout_interaction: float) -> float | None:
    """How long a worker waits for an answer the app process must give within
    `timeout_interaction` seconds (0: no deadline)."""
    return timeout_interaction + DEADLINE_GRACE if timeout_interaction > 0 else None


class AppConnection(abc.ABC):
    """A connection of a page's own to its app process, kept open while the page is: its
    pushes (tag.update()) come down it and, from a WebSocket page, its interactions go up
    it. The app process knows the page by this connection (see htagweb.app.process)."""

    @abc.abstractmethod
    def send(self, request: AppRequest) -> None:
        """Queue `request` (its answer comes down like a push, with its rid)."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until what was sent may be buffered again."""

    @abc.abstractmethod
    async def receive(self) -> AppReply | None:
        """The next answer or push; None once the app process closed the connection.
        FrameError or ConnectionError if it broke."""

    @abc.abstractmethod
    def close(self) -> None: ...

    async def __aiter__(self) -> AsyncIterator[AppReply]:
        while (reply := await self.receive()) is not None:
            yield reply


class AppDoor(Protocol):
    async def start(self) -> object:
        """Be ready to reach app processes (SupervisorError if that cannot be)."""
        ...

    async def render(
        self, ref: AppRef, session_id: str, request: RenderRequest, client: ClientLimits | None
    ) -> AppReply:
        """A fresh instance of the app for this user's page load (its process started if
        needed). ClientLimited, AppTimeout, AppDied or AppProcessError if none comes."""
        ...

    async def interact(
        self, session_id: str, fqn: str, request: InteractRequest | HandshakeRequest
    ) -> AppReply:
        """One interaction (or a parano key exchange) of an HTTP page. AppGone when no
        process runs; AppTimeout (the process was ended), AppDied or AppProcessError."""
        ...

    async def connect(self, session_id: str, fqn: str) -> AppConnection:
        """A connection of the page's own (then send it an attach); AppGone if no process
        runs."""
        ...

    def timeout_of(self, session_id: str, fqn: str) -> float:
        """The interaction deadline the user's process of `fqn` applies, as last told."""
        ...

    async def kill(self, session_id: str, fqn: str) -> None: ...

    async def end_session(self, session_id: str) -> None:
        """End every app process of this session (its cookie was rotated); return once none
        can answer any more."""
        ...
