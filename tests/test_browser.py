"""The browser client in Debian's Chromium, driven by Playwright, against real servers.

Screenshots (normal, busy, reconnecting) are saved under artifacts/screenshots/.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys

import pytest
from playwright.sync_api import Page, expect
from support import screenshot

COUNTER = [sys.executable, "-m", "uvicorn", "counter_server:app", "--port", "{port}"]
TIMER = [sys.executable, "-m", "uvicorn", "timer_server:app", "--port", "{port}"]
STATE = [sys.executable, "-m", "uvicorn", "state_server:app", "--port", "{port}"]
GUNICORN_COUNTER = [
    sys.executable, "-m", "gunicorn", "-w", "1", "-k", "uvicorn.workers.UvicornH11Worker",
    "-b", "127.0.0.1:{port}", "counter_server:app",
]  # fmt: skip
MODES = {"ws": {}, "http": {"COUNTER_HTTP_ONLY": "1"}}
PROXY_HEADERS = """
    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
"""


def count(page: Page) -> str:
    return page.locator(".count").inner_text()


def watch_sockets(page: Page) -> list[str]:
    """The URLs of the WebSockets the page opens, as it opens them."""
    opened: list[str] = []
    page.on("websocket", lambda socket: opened.append(socket.url))
    return opened


def reconnecting(page: Page) -> None:
    expect(page.locator("#htagweb-reconnecting")).to_be_visible()
    expect(page.locator("body")).to_have_class("htagweb-reconnecting")


@pytest.mark.parametrize("mode", MODES)
def test_clicks_update_the_page(serve_forked, new_page, mode):
    server = serve_forked(COUNTER, env=MODES[mode])
    page = new_page()
    sockets = watch_sockets(page)
    page.goto(server.url)
    for expected in ("1", "2", "3"):
        page.click(".inc")
        expect(page.locator(".count")).to_have_text(expected)
    assert len(sockets) == (1 if mode == "ws" else 0)
    if mode == "ws":
        screenshot(page, "normal")


@pytest.mark.parametrize("path", ["/", "/http"])
def test_a_server_side_timer_updates_the_page(serve_forked, new_page, path):
    server = serve_forked(TIMER)
    page = new_page()
    sockets = watch_sockets(page)
    page.goto(server.url + path)
    shown = "Number(document.querySelector('.ticks').textContent)"
    first = page.evaluate(shown)
    # pushed by tag.update(), once every 0.1 s
    page.wait_for_function(f"{shown} >= {first + 5}")
    assert len(sockets) == (1 if path == "/" else 0)


@pytest.mark.parametrize("mode", MODES)
def test_a_slow_interaction_shows_the_busy_state(serve_forked, new_page, mode):
    server = serve_forked(COUNTER, env={**MODES[mode], "COUNTER_SLOW_SECONDS": "1.5"})
    page = new_page()
    page.goto(server.url)
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")
    assert "htagweb-busy" not in (page.locator("body").get_attribute("class") or "")
    page.click(".slow")
    expect(page.locator("body")).to_have_class("htagweb-busy")
    if mode == "ws":
        screenshot(page, "busy")
    expect(page.locator(".count")).to_have_text("2")
    expect(page.locator("body")).not_to_have_class("htagweb-busy")


def test_a_lost_socket_reconnects_refreshes_and_sends_the_click_made_meanwhile(
    serve_forked, new_page
):
    """The worker dies while its master is stopped: the page waits, then reconnects.

    A push made while no socket was open reaches the page through the refresh, and a
    click made while reconnecting is applied once.
    """
    server = serve_forked(
        GUNICORN_COUNTER, env={"COUNTER_LATER_SECONDS": "2"}, stop_signal=signal.SIGTERM
    )
    page = new_page()
    sockets = watch_sockets(page)
    page.goto(server.url)
    worker = int(page.request.get(server.url + "/worker").text())
    page.click(".later")  # pushes "100" in 2 s
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)  # no new worker until SIGCONT
    try:
        os.kill(worker, signal.SIGKILL)
        reconnecting(page)
        screenshot(page, "reconnecting")
        page.click(".inc")  # while reconnecting: queued
        assert server.wait_for_log("later: pushed=", timeout=10) == 1
        assert "later: pushed=False" in server.log  # no page was there to receive it
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    expect(page.locator(".extra")).to_have_text("100")  # from the refresh
    expect(page.locator(".count")).to_have_text("2")
    expect(page.locator("#htagweb-reconnecting")).to_be_hidden()
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("3")
    assert len(sockets) >= 2
    assert "?" in sockets[-1] and "r=1" in sockets[-1]


def test_a_click_in_flight_when_the_socket_dies_is_applied_once(serve_forked, new_page):
    """The answer is lost with the worker; the page sends the click again, the app skips it."""
    server = serve_forked(
        GUNICORN_COUNTER, env={"COUNTER_SLOW_SECONDS": "1.5"}, stop_signal=signal.SIGTERM
    )
    page = new_page()
    page.goto(server.url)
    worker = int(page.request.get(server.url + "/worker").text())
    page.click(".slow")
    server.wait_for_log("slow click started")
    os.kill(worker, signal.SIGKILL)
    expect(page.locator("body")).to_have_class("htagweb-busy")
    # The page is busy until the resent click is answered; had the app applied it again,
    # the count would go on to 2 (1.5 s later).
    expect(page.locator("body")).not_to_have_class("htagweb-busy", timeout=20_000)
    assert count(page) == "1"
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("2")
    assert server.log.count("slow click started") == 1


@pytest.mark.parametrize("parano", ["0", "1"])
def test_behind_a_proxy_refusing_websockets_the_page_falls_back_to_http(
    serve_forked, new_page, nginx, parano
):
    server = serve_forked(COUNTER, env={"COUNTER_PARANO": parano})
    proxy = nginx(f"""
        location / {{
            if ($http_upgrade) {{ return 403; }}
            proxy_pass {server.url};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
        }}
    """)
    page = new_page()
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.goto(proxy.url)
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")
    page.click(".ticks")  # three tag.update() pushes, through Server-Sent Events
    expect(page.locator(".count")).to_have_text("301")
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("302")
    assert len(posts) == (4 if parano == "1" else 3)  # parano: a key exchange first
    assert '" 403 ' in proxy.access_log  # the WebSocket was tried, and refused


@pytest.mark.parametrize("http_only", ["0", "1"])
def test_a_restarted_server_reloads_the_page_and_keeps_tag_state(
    serve_forked, new_page, http_only, tmp_path
):
    env = {"STATE_DIR": str(tmp_path), "STATE_SECRET": "s" * 32, "STATE_HTTP_ONLY": http_only}
    server = serve_forked(STATE, env=env)
    page = new_page()
    page.goto(server.url)
    first_pid = page.locator(".pid").inner_text()
    page.click(".inc")
    page.click(".inc")
    expect(page.locator(".state")).to_contain_text('"clicks": 2')
    assert server.stop()  # open WebSockets and event streams do not hold it
    reconnecting(page)
    serve_forked(STATE, env=env, port=server.port)
    expect(page.locator(".pid")).not_to_have_text(first_pid)  # a new page, a new process
    expect(page.locator(".state")).to_contain_text('"clicks": 2')
    page.click(".inc")
    expect(page.locator(".state")).to_contain_text('"clicks": 3')


def test_under_a_path_prefix_behind_a_proxy(serve_forked, new_page, nginx):
    server = serve_forked([*COUNTER, "--root-path", "/sub"])
    proxy = nginx(f"""
        location /sub/ {{
            proxy_pass {server.url}/;
            {PROXY_HEADERS}
        }}
    """)
    page = new_page()
    sockets = watch_sockets(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(proxy.url + "/sub/")
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")
    page.click(".ticks")
    expect(page.locator(".count")).to_have_text("301")
    assert [url.split("?")[0] for url in sockets] == [
        f"ws://127.0.0.1:{proxy.port}/sub/_/counter.App"
    ]
    assert all(url.startswith(proxy.url + "/sub/") for url in requests), requests


@pytest.mark.parametrize("heartbeat", ["0.3", "0"])
def test_the_heartbeat_keeps_an_idle_socket_open_behind_a_proxy(
    serve_forked, new_page, nginx, heartbeat
):
    """The proxy cuts connections silent for 1 s; without a heartbeat the page reconnects."""
    server = serve_forked(COUNTER, env={"COUNTER_HEARTBEAT": heartbeat})
    proxy = nginx(f"""
        location / {{
            proxy_pass {server.url};
            proxy_read_timeout 1s;
            {PROXY_HEADERS}
        }}
    """)
    page = new_page()
    sockets = watch_sockets(page)
    page.goto(proxy.url)
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")
    page.wait_for_timeout(3000)  # idle: what is tested is the time passing
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("2")
    if heartbeat == "0":
        assert len(sockets) >= 2  # the proxy did cut the idle socket
    else:
        assert len(sockets) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_full_parano_session_is_sealed_on_the_wire(serve_forked, new_page, mode):
    server = serve_forked(COUNTER, env={**MODES[mode], "COUNTER_PARANO": "1"})
    page = new_page()
    wire: list[str] = []  # every interaction message, answer and push the page saw

    def watch(socket):
        socket.on("framesent", lambda payload: wire.append(str(payload)))
        socket.on("framereceived", lambda payload: wire.append(str(payload)))

    page.on("websocket", watch)
    page.on("request", lambda r: r.method == "POST" and wire.append(r.post_data or ""))
    page.on(
        "response",
        lambda r: "/_/" in r.url and r.request.method == "POST" and wire.append(r.text()),
    )
    page.goto(server.url)
    for expected in ("1", "2"):
        page.click(".inc")
        expect(page.locator(".count")).to_have_text(expected)
    page.click(".ticks")  # pushes, sealed too
    expect(page.locator(".count")).to_have_text("302")
    messages = [json.loads(m) for m in wire if m not in ("ping", "pong")]
    assert len(messages) >= 6
    assert all(set(m) <= {"hello", "c", "d", "ch"} for m in messages), messages
    assert sum("hello" in m for m in messages) == 2  # one key exchange each way
    assert not any('"update"' in m or "__on__" in m for m in wire)  # quotes: not in base64


def test_a_parano_page_goes_on_after_interactions_refused_on_the_way(serve_forked, new_page):
    """Refused by the rate limit, a sealed click is never opened: keys are agreed again."""
    env = {"COUNTER_HTTP_ONLY": "1", "COUNTER_PARANO": "1", "COUNTER_RATE": "1"}  # bursts of 2
    server = serve_forked(COUNTER, env=env)
    page = new_page()
    page.goto(server.url)
    answered = itertools.count(1)

    def sixth_click(response) -> bool:  # key exchanges (after each refusal) not counted
        request = response.request
        is_click = request.method == "POST" and "hello" not in (request.post_data or "")
        return is_click and next(answered) == 6

    with page.expect_response(sixth_click):
        for _ in range(6):
            page.click(".inc")
    applied = int(count(page))
    assert 1 <= applied < 6  # some were refused (429)
    page.wait_for_timeout(2500)  # the limit's bucket refills: the time passing is the subject
    page.click(".inc")
    expect(page.locator(".count")).to_have_text(str(applied + 1))
