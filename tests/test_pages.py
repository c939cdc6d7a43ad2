"""The pages the web side answers itself: the error page and the boot id."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from htagweb.web.pages import boot_handler, error_page


def test_the_error_page_escapes_its_text_and_refreshes_only_when_asked():
    page = error_page("<script>x</script> & co", 404)
    assert page.status_code == 404
    assert b"&lt;script&gt;x&lt;/script&gt; &amp; co" in page.body and b"<script>" not in page.body
    assert b"refresh" not in page.body
    assert b'http-equiv="refresh"' in error_page("broken", 500, refresh=True).body


def test_the_boot_id_is_served_only_by_a_development_server():
    request = Request({"type": "http", "method": "GET", "path": "/_htagweb/boot", "headers": []})
    dev = asyncio.run(boot_handler("abc123")(request))
    assert (dev.status_code, dev.body, dev.headers["cache-control"]) == (200, b"abc123", "no-store")
    production = asyncio.run(boot_handler("")(request))
    assert production.status_code == 404
