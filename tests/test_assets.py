"""The browser's scripts as htagweb serves them: versioned URLs cached for a year."""

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


def fetch(method: str, url: str) -> httpx.Response:
    """`url` requested from an app with only the assets' routes, in this process."""

    async def request() -> httpx.Response:
        transport = httpx.ASGITransport(app=Starlette(routes=assets.routes()))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, url)

    return asyncio.run(request())


@pytest.mark.parametrize("name", NAMES)
def test_a_script_is_cached_for_a_year_under_its_versioned_url_only(name):
    body = (Path(htagweb.__file__).parent / "static" / name).read_bytes()
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


def test_versions_are_those_of_the_files():
    assert assets.ASSETS["client.js"].version == assets.CLIENT_JS_VERSION
    assert assets.ASSETS["parano.js"].version == assets.PARANO_JS_VERSION
    assert assets.CLIENT_JS_VERSION != assets.PARANO_JS_VERSION
