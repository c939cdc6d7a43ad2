"""tag.update() pushes for pages without a WebSocket: GET /_/{fqn}, as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..sessions.cookie import SESSION_SCOPE_KEY
from ..wire.ipc import FrameError
from ..wire.messages import AttachRequest
from .door import AppGone
from .replies import address_of, page_of, to_browser
from .shutdown import stopping_event

if TYPE_CHECKING:
    from .runner import Runner

logger = logging.getLogger(__name__)

MAX_STREAM_PROOF = 100  # parano: an event stream's e=n.proof (checked by the app process)


async def serve(runner: Runner, request: Request) -> Response:
    """tag.update() pushes for a page without a WebSocket, as Server-Sent Events."""
    fqn = request.path_params["fqn"]
    refused = runner.refusal(request)
    if refused:
        return PlainTextResponse(refused[1], status_code=refused[0])
    session_id = request.scope[SESSION_SCOPE_KEY]
    address = address_of(request)
    await runner.door.start()  # before the response starts: a failure is still a 500
    too_many = runner.connections.open(session_id, address)
    if too_many:
        logger.warning("refused an event stream: %s", too_many)
        return PlainTextResponse(too_many, status_code=429)
    params = request.query_params
    proof = params.get("e")  # parano: that the page holding the keys opened this stream
    attach: AttachRequest = {
        "op": "attach",
        "instance": params.get("i"),
        "page": page_of(params),
        "refresh": params.get("r") == "1",
        "proof": proof if proof and len(proof) <= MAX_STREAM_PROOF else None,
        "rid": 0,
    }
    return EventStreamResponse(
        event_stream(runner, session_id, fqn, attach),
        on_close=lambda: runner.connections.close(session_id, address),
    )


async def event_stream(
    runner: Runner, session_id: str, fqn: str, attach: AttachRequest
) -> AsyncIterator[str]:
    # The connection is opened here, not before the response starts, so that it is
    # closed by this generator's end whatever ends the response.
    try:
        connection = await runner.door.connect(session_id, fqn)
    except AppGone:
        yield event({"reload": True})
        return
    connection.send(attach)
    stopping = asyncio.ensure_future(stopping_event().wait())
    next_frame = asyncio.ensure_future(connection.receive())
    heartbeat = runner.heartbeat or None
    try:
        yield ": connected\n\n"
        while True:
            await asyncio.wait(
                {next_frame, stopping}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
            )
            if stopping.done():
                return  # the page reconnects to whichever server comes next
            if not next_frame.done():
                # An event, not a comment: the page sees it, and knows the stream lives.
                yield "event: ping\ndata: \n\n"
                continue
            try:
                message = next_frame.result()
            except (FrameError, ConnectionError):
                message = None
            if message is None:
                yield "event: ended\ndata: {}\n\n"
                return
            down = to_browser(message)
            if down is not None:
                yield event(down)
                if down.get("reload"):
                    return  # not attached: the page loads again
            next_frame = asyncio.ensure_future(connection.receive())
    finally:
        stopping.cancel()
        next_frame.cancel()
        connection.close()


class EventStreamResponse(StreamingResponse):
    """Server-Sent Events; `on_close` runs once the response ends, however it ends."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},  # nginx: unbuffered
        )
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
