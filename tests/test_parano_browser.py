"""Parano pages in Chromium: behind a relay that changes traffic, and reconnecting.

The app seals every action it sends a parano page: the page applies what comes unsealed
only as a control message (reload, rekey, an error's text, the key exchange), and drops
the rest. The relay (tests/apps/tampering_relay.py) injects an update of the whole page
and page script; the page must show none of it and go on working.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

COUNTER = [sys.executable, "-m", "uvicorn", "counter_server:app", "--port", "{port}"]
GUNICORN_COUNTER = [
    sys.executable, "-m", "gunicorn", "-w", "1", "-k", "uvicorn.workers.UvicornH11Worker",
    "-b", "127.0.0.1:{port}", "counter_server:app",
]  # fmt: skip
RELAY = [
    sys.executable, "-m", "uvicorn", "tampering_relay:app", "--port", "{port}",
    "--timeout-graceful-shutdown", "2",
]  # fmt: skip
MODES = {"ws": {}, "http": {"COUNTER_HTTP_ONLY": "1"}}
DROPPED = "an unsealed message was dropped (parano mode)"


@pytest.mark.parametrize("mode", MODES)
def test_a_parano_page_applies_no_unsealed_actions_added_on_the_way(serve_forked, new_page, mode):
    server = serve_forked(COUNTER, env={**MODES[mode], "COUNTER_PARANO": "1"})
    relay = serve_forked(RELAY, env={"RELAY_UPSTREAM": server.url})
    page = new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(relay.url)
    title = page.title()
    # WebSocket: the actions came after the keys, before this click's answer. HTTP: this
    # click's answer was replaced by them; the page sent the click again.
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")
    # Pushes: over HTTP, the relay puts its actions in the event stream before the first.
    page.click(".ticks")
    expect(page.locator(".count")).to_have_text("301")
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("302")
    if mode == "ws":
        assert relay.wait_for_log("injected into a socket") == 1
    else:
        assert relay.wait_for_log("replaced the answer to a sealed interaction") == 1
        assert relay.wait_for_log("injected into an event stream") == 1
    expect(page.locator(".pwned")).to_have_count(0)
    assert page.title() == title != "pwned"
    assert sum(DROPPED in text for text in console) == 1, console  # reported once
    # An unsealed error is shown, as text; the page script that came with it is not run.
    assert any("injected by the relay" in text for text in console), console


def test_a_parano_socket_that_reconnects_proves_its_keys(serve_forked, new_page):
    """The worker dies: the page's next socket agrees on new keys, proven with the old ones."""
    server = serve_forked(GUNICORN_COUNTER, env={"COUNTER_PARANO": "1"}, stop_signal=signal.SIGTERM)
    page = new_page()
    hellos: list[str] = []  # the page's side of each key exchange

    def watch(socket) -> None:
        def sent(payload) -> None:
            if "hello" in str(payload):
                hellos.append(json.loads(payload)["hello"])

        socket.on("framesent", sent)

    page.on("websocket", watch)
    page.goto(server.url)
    worker = int(page.request.get(server.url + "/worker").text())
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")
    os.kill(worker, signal.SIGKILL)
    page.click(".inc")  # sent once the page has a socket and keys again
    expect(page.locator(".count")).to_have_text("2")
    page.click(".ticks")  # pushes, sealed with the new keys
    expect(page.locator(".count")).to_have_text("302")
    assert len(hellos) == 2
    assert "." not in hellos[0] and "." in hellos[1]  # the second one carries its proof


def test_a_parano_http_page_proves_each_event_stream_it_opens(serve_forked, new_page):
    """Over HTTP the page's pushes come by an event stream that proves it holds the keys:
    the first one, one after new keys (the app asked for them), one after the worker died."""
    env = {"COUNTER_PARANO": "1", "COUNTER_HTTP_ONLY": "1"}
    server = serve_forked(GUNICORN_COUNTER, env=env, stop_signal=signal.SIGTERM)
    page = new_page()
    proofs: list[str] = []  # the e= parameter of each event stream the page opened

    def opened(request) -> None:
        if request.method == "GET" and "/_/" in request.url:
            proofs.append(parse_qs(urlsplit(request.url).query)["e"][0])

    page.on("request", opened)
    page.goto(server.url)
    worker = int(page.request.get(server.url + "/worker").text())
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")
    rekeyed: list[str] = []

    def rekey_one_click(route) -> None:
        # The app answers one click "new keys, please" (as when counters are out of step).
        request = route.request
        if request.method == "POST" and not rekeyed and "hello" not in request.post_data:
            rekeyed.append(request.url)
            route.fulfill(status=409, content_type="application/json", body='{"rekey": true}')
        else:
            route.continue_()

    page.route(lambda url: "/_/" in url and "e=" not in url, rekey_one_click)
    page.click(".inc")  # sent again with the new keys, once the event stream has them too
    expect(page.locator(".count")).to_have_text("2")
    page.click(".ticks")
    expect(page.locator(".count")).to_have_text("302")
    with page.expect_request(lambda request: request.method == "GET" and "e=" in request.url):
        os.kill(worker, signal.SIGKILL)  # the event stream drops: the page opens another
    page.click(".ticks")  # a reload (a refused stream) would have shown a fresh count
    expect(page.locator(".count")).to_have_text("602")
    assert len(rekeyed) == 1
    assert [proof.split(".")[0] for proof in proofs] == ["1", "1", "2"]  # n per keys
    assert len(set(proofs)) == 3


def test_only_parano_pages_load_parano_js_just_before_client_js(serve_forked, new_page):
    server = serve_forked(COUNTER)  # "/": a plain page, "/parano": a parano one
    scripts = """Array.from(document.scripts, (s) => s.src && new URL(s.src).pathname)
        .filter((path) => path && path.startsWith("/_htagweb/"))"""
    for path, expected in (("/", ["client.js"]), ("/parano", ["parano.js", "client.js"])):
        page = new_page()  # its own context: nothing of the other page in its cache
        sockets: list[str] = []
        page.on("websocket", lambda socket, sockets=sockets: sockets.append(socket.url))
        loaded: list[str] = []
        page.on(
            "request",
            lambda r, loaded=loaded: "/_htagweb/" in r.url and loaded.append(urlsplit(r.url).path),
        )
        page.goto(server.url + path)
        page.click(".inc")
        expect(page.locator(".count")).to_have_text("1")
        assert page.evaluate(scripts) == [f"/_htagweb/{name}" for name in expected], path
        assert loaded == [f"/_htagweb/{name}" for name in expected], path
        sealed = parse_qs(urlsplit(sockets[0]).query).get("s")
        assert sealed == (["1"] if path == "/parano" else None), sockets


def test_a_parano_page_without_parano_js_says_so_and_sends_nothing(serve_forked, new_page):
    server = serve_forked(COUNTER)
    page = new_page()
    page.route("**/_htagweb/parano.js*", lambda route: route.abort())
    console: list[tuple[str, str]] = []
    page.on("console", lambda message: console.append((message.type, message.text)))
    sent: list[str] = []
    page.on("websocket", lambda socket: sent.append(socket.url))
    page.on("request", lambda r: "/_/" in r.url and sent.append(r.url))
    with page.expect_console_message(lambda message: "PYTHON ERROR" in message.text):
        page.goto(server.url + "/parano")
    missing = "parano mode, but parano.js did not load"
    assert any(kind == "error" and missing in text for kind, text in console), console
    assert any("PYTHON ERROR" in text and missing in text for _, text in console), console
    assert sent == []
