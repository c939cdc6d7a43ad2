"""Interactions and pushes over a WebSocket: WS /_/{fqn}, one socket a page, carried to
its app process's socket and back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..sessions.cookie import SESSION_SCOPE_KEY
from ..wire.ipc import FrameError
from ..wire.messages import AttachRequest
from ..wire.protocol import InvalidInteraction, interact_request, parse_message
from . import guard
from .door import AppConnection, AppGone, AppProcessError, worker_deadline
from .replies import (
    MESSAGE_LIMITED,
    MESSAGE_TIMEOUT,
    WS_CLOSE_APP_GONE,
    WS_CLOSE_POLICY,
    WS_CLOSE_TOO_BIG,
    address_of,
    page_of,
    to_browser,
)

if TYPE_CHECKING:
    from .runner import Runner

logger = logging.getLogger(__name__)

MAX_MALFORMED_MESSAGES = 10  # a WebSocket sending more is closed: no page of ours does


async def serve(runner: Runner, websocket: WebSocket) -> None:
    fqn = websocket.path_params["fqn"]
    refused = guard.origin_refusal(websocket.headers, runner.allowed_origins)
    session_id = websocket.scope[SESSION_SCOPE_KEY]
    address = address_of(websocket)
    refused = refused or runner.connections.open(session_id, address)
    if refused:  # closing before accepting answers the handshake with 403
        logger.warning("refused a WebSocket: %s", refused)
        await websocket.close(WS_CLOSE_POLICY)
        return
    try:
        await _relay(runner, websocket, fqn, session_id)
    finally:
        runner.connections.close(session_id, address)


async def _relay(runner: Runner, websocket: WebSocket, fqn: str, session_id: str) -> None:
    try:
        connection = await runner.door.connect(session_id, fqn)
    except AppGone:
        await websocket.accept()
        await websocket.send_text(json.dumps({"reload": True}))
        await websocket.close(WS_CLOSE_APP_GONE, "no app for this page")
        return
    await websocket.accept()
    bridge = SocketBridge(
        websocket, connection, runner.door.timeout_of(session_id, fqn), runner.max_message_bytes
    )
    params = websocket.query_params
    attach: AttachRequest = {
        "op": "attach",
        "instance": params.get("i"),
        "page": page_of(params),
        "refresh": params.get("r") == "1",
    }
    try:
        await bridge.run(attach, sealed=params.get("s") == "1")
    finally:
        connection.close()
    if bridge.timed_out:
        with contextlib.suppress(AppProcessError):
            await runner.door.kill(session_id, fqn)


class SocketBridge:
    """Carries one page's WebSocket to its app process and back.

    Interactions go up as framed requests; answers and tag.update() pushes come down
    as htag actions. A watchdog ends the process if an answer is overdue (the app's own
    deadline should have fired first), and the page is told why when the process ends.
    """

    def __init__(
        self,
        websocket: WebSocket,
        connection: AppConnection,
        timeout_interaction: float,
        max_message_bytes: int,
    ) -> None:
        self.websocket = websocket
        self.max_message_bytes = max_message_bytes
        self.app = connection
        self.timeout_interaction = timeout_interaction
        # Unanswered interactions: when each was sent, and its number (seq) if it has one.
        self.sent_at: collections.deque[tuple[float, Any]] = collections.deque()
        self.sent = asyncio.Event()
        self.timed_out = False
        self.browser_left = False

    async def run(self, attach: AttachRequest, sealed: bool) -> None:
        """Bridge until either side leaves; `sealed`: parano, the page's keys come first."""
        if not await self._attach(attach, sealed):
            return
        tasks = [
            asyncio.ensure_future(self._downstream()),
            asyncio.ensure_future(self._upstream()),
            asyncio.ensure_future(self._watchdog()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, ConnectionError):
                await task
        if self.browser_left:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, ConnectionError):
            if self.sent_at or self.timed_out:
                text = MESSAGE_TIMEOUT.format(seconds=self.timeout_interaction)
                await self.websocket.send_text(json.dumps({"err": text}))
            await self.websocket.close(WS_CLOSE_APP_GONE, "the app ended")

    async def _attach(self, attach: AttachRequest, sealed: bool) -> bool:
        """The attach goes up (parano: with the page's public key, its first message) and
        its answer comes back, before anything else.

        False, and the socket closed, if the page left or sent something else first, or
        if the app process did not attach the socket: no keys were agreed (a bad key, or a
        page id whose keys another page holds), or "reload" (no live instance; parano: a
        socket without a key exchange, which must not take the page's pushes). With
        "reload" the page loads a page of its own.
        """
        if sealed:
            hello = None
            with contextlib.suppress(WebSocketDisconnect, InvalidInteraction, KeyError):
                text = await self.websocket.receive_text()  # KeyError: a binary frame
                hello = parse_message(text, self.max_message_bytes).get("hello")
            if hello is None:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                    await self.websocket.close(WS_CLOSE_POLICY, "a key exchange was expected")
                return False
            attach = {**attach, "hello": hello}
        self.app.send({**attach, "rid": 0})
        try:
            reply = await self.app.receive()
        except (FrameError, ConnectionError):
            reply = None
        if not isinstance(reply, dict):
            return True  # the app ended: the bridge finds out, and tells the page
        if "timeout_interaction" in reply:
            self.timeout_interaction = float(reply["timeout_interaction"])
        down = to_browser(reply)
        attached = "hello" in reply if sealed else reply.get("kind") != "reload"
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            if down is not None:
                await self.websocket.send_text(json.dumps(down))
            if attached:
                return True
            reason = "no keys were agreed" if sealed else "not attached"
            await self.websocket.close(WS_CLOSE_POLICY, reason)
        return False

    async def _upstream(self) -> None:
        rid = 0
        malformed = 0
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.browser_left = True
                return
            text = message.get("text")
            if text == "ping":  # the page's heartbeat
                await self.websocket.send_text("pong")
                continue
            try:
                if text is None:
                    raise InvalidInteraction("interactions are text frames")
                parsed = parse_message(text, self.max_message_bytes)
                if "hello" in parsed:
                    raise InvalidInteraction("keys are agreed once, when the socket opens")
            except InvalidInteraction as exc:
                malformed += 1
                if exc.too_large:
                    await self._close_for(WS_CLOSE_TOO_BIG, "message too big")
                    return
                if malformed > MAX_MALFORMED_MESSAGES:
                    await self._close_for(WS_CLOSE_POLICY, "too many malformed messages")
                    return
                await self.websocket.send_text(json.dumps({"err": f"bad interaction: {exc}"}))
                continue
            rid += 1
            self.sent_at.append((time.monotonic(), parsed.get("payload", {}).get("seq")))
            self.sent.set()
            self.app.send({**interact_request(parsed), "rid": rid})
            await self.app.drain()

    async def _close_for(self, code: int, reason: str) -> None:
        """Close the page's socket because of what it sent (it is not told anything else)."""
        logger.warning("closed a WebSocket: %s", reason)
        await self.websocket.close(code, reason)
        self.browser_left = True

    async def _downstream(self) -> None:
        with contextlib.suppress(FrameError, ConnectionError):
            async for message in self.app:
                if "timeout_interaction" in message:  # the app process's own deadline
                    self.timeout_interaction = float(message["timeout_interaction"])
                seq = None
                if message.get("rid") and self.sent_at:
                    seq = self.sent_at.popleft()[1]
                if message.get("kind") == "limited":
                    await self.websocket.send_text(json.dumps({"err": MESSAGE_LIMITED}))
                    await self.websocket.close(WS_CLOSE_POLICY, "too many interactions")
                    self.browser_left = True  # closed here: nothing more to tell it
                    return
                down = to_browser(message)
                if down is not None:
                    if seq is not None and "seq" not in down and "c" not in down:
                        down["seq"] = seq  # an error answer: the page stops waiting for it
                    await self.websocket.send_text(json.dumps(down))

    async def _watchdog(self) -> None:
        while True:
            deadline = worker_deadline(self.timeout_interaction)
            if not self.sent_at or deadline is None:
                self.sent.clear()
                await self.sent.wait()
                continue
            overdue = time.monotonic() - self.sent_at[0][0] - deadline
            if overdue >= 0:
                self.timed_out = True
                return
            await asyncio.sleep(-overdue)
