"""Refuses every request another site's page makes the browser send to the dev server.

Opening a URL of the development server imports and runs a file of the folder, and a
page of any site can make the browser request such a URL (an <img>, a link, a form, a
script's navigation). The browser says where a request comes from: `Sec-Fetch-Site`,
and `Origin` or `Referer`. A request without these headers (a typed URL, curl) is
served; one the browser marks `cross-site`, or whose Origin or Referer names a host
other than the one in its Host header, gets 403 before any route sees it.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..web.guard import origin_refusal

logger = logging.getLogger(__name__)

REFUSED = (
    b"403: refused, this request came from another site's page. "
    b"Open the development server's address yourself."
)


def cross_site_refusal(headers: Headers) -> str | None:
    """Why these request headers show another site's page, or None."""
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return "Sec-Fetch-Site: cross-site"
    return origin_refusal(headers, frozenset())


class SameSiteOnly:
    """Pure ASGI middleware: 403 for HTTP requests and WebSocket handshakes sent by
    another site's page; lifespan and everything else pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = cross_site_refusal(Headers(scope=scope))
        if refused is None:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "WEBSOCKET")
        logger.warning("refused %s %r: %s", method, scope.get("path", ""), refused)
        if scope["type"] == "websocket":
            # Closing before accepting: the server answers the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(REFUSED)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": REFUSED})
