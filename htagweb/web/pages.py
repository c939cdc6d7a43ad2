"""What the web side answers itself, for the Runner and the development server alike:
the page shown instead of an app, and the boot id pages ask for to learn of a reload."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

BOOT_PATH = "/_htagweb/boot"  # client.js asks it when the page was served with a boot id


def error_page(text: str, status: int, refresh: bool = False) -> HTMLResponse:
    """A page showing `text` (escaped); with `refresh`, the browser loads it again each
    second, which shows the app again once the development server has reloaded it."""
    again = '<meta http-equiv="refresh" content="1">' if refresh else ""
    body = f"<!DOCTYPE html><title>htagweb</title>{again}<p class='error'>{html.escape(text)}</p>"
    return HTMLResponse(body, status_code=status)


def boot_handler(boot_id: str) -> Callable[[Request], Awaitable[Response]]:
    """The handler of BOOT_PATH: this server process's boot id, which open pages compare
    with theirs to reload when the process was replaced; 404 without one (production)."""

    async def boot(request: Request) -> Response:
        if not boot_id:
            return PlainTextResponse("not a development server", status_code=404)
        return PlainTextResponse(boot_id, headers={"Cache-Control": "no-store"})

    return boot
