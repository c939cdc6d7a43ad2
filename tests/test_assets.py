"""The browser's scripts as htagweb serves them: client.js put together from its pieces,
one URL per script, versioned URLs cached for a year."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

import htagweb
from htagweb.web import assets

NAMES = ["client.js", "parano.js"]
STATIC = Path(htagweb.__file__).parent / "static"


def fetch(method: str, url: str) -> httpx.Response:
    """`url` requested from an app with only the assets' routes, in this process."""

    async def request() -> httpx.Response:
        transport = httpx.ASGITransport(app=Starlette(routes=assets.routes()))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, url)

    return asyncio.run(request())


def test_client_js_is_its_pieces_in_order_in_one_function():
    pieces = sorted(path.name for path in (STATIC / "client").iterdir())
    assert pieces == sorted(assets.CLIENT_PIECES), "a piece left out, or one that is gone"
    assert not (STATIC / "client.js").exists()  # the pieces are the source
    served = fetch("GET", "/_htagweb/client.js").text
    assert served.startswith(assets.CLIENT_OPEN) and served.endswith(assets.CLIENT_CLOSE)
    at = len(assets.CLIENT_OPEN)
    for name in assets.CLIENT_PIECES:  # whole, in order, each after a comment naming it
        text = (STATIC / "client" / name).read_text(encoding="utf-8")
        assert text.endswith("\n") and "use strict" not in text, name
        start = served.index(f"\n// ---- client/{name}\n{text}", at)
        assert start == at, name  # nothing else between two pieces
        at = start + len(f"\n// ---- client/{name}\n{text}")
    assert served[at:] == assets.CLIENT_CLOSE


@pytest.mark.parametrize("name", NAMES)
def test_a_script_is_cached_for_a_year_under_its_versioned_url_only(name):
    body = assets.ASSETS[name].body
    if name == "parano.js":
        assert body == (STATIC / name).read_bytes()
    version = hashlib.sha256(body).hexdigest()[:12]
    url = assets.asset_url("/sub", name)
    assert url == f"/sub/_htagweb/{name}?v={version}"
    url = url.removeprefix("/sub")  # what the app below /sub is asked for
    versioned = fetch("GET", url)
    assert versioned.status_code == 200 and versioned.content == body
    assert versioned.headers["content-type"].startswith("text/javascript")
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert versioned.headers["etag"] == f'"{version}"'
    for other in (f"/_htagweb/{name}", f"/_htagweb/{name}?v=old"):
        response = fetch("GET", other)
        assert response.content == body
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["etag"] == f'"{version}"'
    assert fetch("HEAD", url).status_code == 200


def test_versions_are_those_of_the_scripts_served():
    assert assets.ASSETS["client.js"].version == assets.CLIENT_JS_VERSION
    assert assets.ASSETS["parano.js"].version == assets.PARANO_JS_VERSION
    assert assets.CLIENT_JS_VERSION != assets.PARANO_JS_VERSION


def test_only_the_two_scripts_are_served():
    """The pieces of client.js are not served on their own: a page loads one client URL."""
    assert [route.path for route in assets.routes()] == [f"/_htagweb/{n}" for n in NAMES]
    assert fetch("GET", "/_htagweb/client/shared.js").status_code == 404
