"""The scripts htagweb adds to its pages: client.js on every page, parano.js (loaded before
it) on parano pages.

Each is read once, and served at /_htagweb/<name>. Pages name it with ?v=<version> (a
prefix of its sha256), which is cached for a year; any other URL of it is revalidated.
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


@dataclass(frozen=True)
class Asset:
    body: bytes
    version: str


def _read(name: str) -> Asset:
    body = resources.files("htagweb").joinpath(f"static/{name}").read_bytes()
    return Asset(body, hashlib.sha256(body).hexdigest()[:12])


ASSETS: dict[str, Asset] = {name: _read(name) for name in ("client.js", "parano.js")}
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
