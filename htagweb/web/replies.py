"""What the browser gets for what an app process answered or pushed, and the limits and
codes every transport shares."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.websockets import WebSocket

from .. import limits
from ..wire.messages import AppReply
from ..wire.protocol import InvalidInteraction

WS_CLOSE_APP_GONE = 4404
WS_CLOSE_POLICY = 1008
WS_CLOSE_TOO_BIG = 1009
PAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MESSAGE_TIMEOUT = (
    "The app stopped while handling this action (it ran longer than {seconds:g}s, or crashed). "
    "Reload the page to start it again."
)
MESSAGE_ENDED = "The app ended. Reload the page to start it again."
MESSAGE_FAILED = "The app could not handle this action; the error was logged on the server."
MESSAGE_LIMITED = "Too many interactions: slow down."


def page_of(params: Any) -> str | None:
    """The page id a request carries (p=...), or None when it has none or a malformed one."""
    page = params.get("p")
    return page if page and PAGE_ID.fullmatch(page) else None


def address_of(connection: Request | WebSocket) -> str:
    """The client's address as per-IP limits count it (see limits.address_group)."""
    return limits.address_group(connection.client.host if connection.client else "")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InvalidInteraction(f"over {limit} bytes", too_large=True)
    return bytes(body)


def to_browser(reply: AppReply) -> dict[str, Any] | None:
    """What the page receives for an app process's answer or push; None for nothing
    (the answer to a plain attach, or what a page is not meant to see)."""
    if not isinstance(reply, dict) or "kind" not in reply:
        return None
    # The app process runs the user's code: what it sends is checked before it is used.
    if reply["kind"] == "actions":
        return _object(reply.get("actions"))  # {} too: the click changed nothing, an answer
    if reply["kind"] == "sealed":
        return _object(reply.get("sealed"))
    if reply["kind"] == "reload":
        return {"reload": True}
    if reply["kind"] == "rekey":  # parano: the page must agree on new keys
        return {"rekey": True}
    if reply["kind"] == "error":  # logged by the app process
        return {"err": MESSAGE_FAILED}
    if reply["kind"] == "keys":  # parano: the app process's public key
        return {"hello": str(reply.get("hello"))}
    if reply["kind"] == "attached":
        down: dict[str, Any] = {}
        if "hello" in reply:
            down["hello"] = str(reply["hello"])
        down.update(_object(reply.get("sealed", reply.get("actions"))) or {})
        return down or None
    return None


def _object(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None
