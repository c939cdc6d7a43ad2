"""The scripts htagweb adds to its pages: client.js on every page, parano.js (loaded before
it) on parano pages.

client.js is built here, once, from its pieces in htagweb/static/client/ (one concern
each): CLIENT_PIECES in order, inside one function in strict mode, so that they share one
scope and a page still loads one script. parano.js is htagweb/static/parano.js as it is.

Each is served at /_htagweb/<name>. Pages name it with ?v=<version> (a prefix of the
sha256 of what is served), which is cached for a year; any other URL of it is revalidated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PREFIX = "/_htagweb/"
CACHE_VERSIONED = "public, max-age=31536000, immutable"
CACHE_OTHERWISE = "no-cache"

# The pieces of client.js, in the order their top levels run: a piece may call any
# function of another, but what it runs at once reads only what earlier pieces defined.
# connection.js's link reads shared.js's settings; codecs.js chooses the codec at once,
# and may end the link then (connection.js), which shows it (indicator.js, which reads
# http.js's failed POSTs). start.js, last, starts the page once the document is parsed.
CLIENT_PIECES = (
    "shared.js",  # first: the values shared with the server, the settings, the outbox
    "connection.js",
    "indicator.js",
    "messages.js",
    "websocket.js",
    "http.js",
    "codecs.js",
    "devreload.js",
    "start.js",
)
CLIENT_OPEN = (
    "// htagweb browser client: the pieces of htagweb/static/client/ in one function,\n"
    "// put together by htagweb/web/assets.py (shared.js explains them).\n"
    "(function () {\n"
    '  "use strict";\n'
)
CLIENT_CLOSE = "})();\n"


@dataclass(frozen=True)
class Asset:
    body: bytes
    version: str


def _static(path: str) -> bytes:
    return resources.files("htagweb").joinpath(f"static/{path}").read_bytes()


def client_js() -> str:
    """client.js as served: each piece, named by a comment, in CLIENT_PIECES' order."""
    pieces = [
        f"\n// ---- client/{name}\n" + _static(f"client/{name}").decode("utf-8")
        for name in CLIENT_PIECES
    ]
    return CLIENT_OPEN + "".join(pieces) + CLIENT_CLOSE


def _asset(body: bytes) -> Asset:
    return Asset(body, hashlib.sha256(body).hexdigest()[:12])


ASSETS: dict[str, Asset] = {
    "client.js": _asset(client_js().encode("utf-8")),
    "parano.js": _asset(_static("parano.js")),
}
CLIENT_JS_VERSION = ASSETS["client.js"].version
PARANO_JS_VERSION = ASSETS["parano.js"].version


def asset_url(root_path: str, name: str) -> str:
    """The URL a page loads `name` from, below the ASGI `root_path` ("" at the root)."""
    return f"{root_path}{PREFIX}{name}?v={ASSETS[name].version}"


def _endpoint(asset: Asset) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        versioned = request.query_params.get("v") == asset.version
        return Response(
            asset.body,
            media_type="text/javascript",
            headers={
                "Cache-Control": CACHE_VERSIONED if versioned else CACHE_OTHERWISE,
                "ETag": f'"{asset.version}"',
            },
        )

    return serve


def routes() -> list[Route]:
    """The routes serving every asset (GET and HEAD), for a Starlette app."""
    return [
        Route(PREFIX + name, _endpoint(asset), methods=["GET", "HEAD"], name=name)
        for name, asset in ASSETS.items()
    ]
