"""Apps written as htag desktop apps and htagweb 1.0's users write them, in Chromium.

tests/apps/compat_app.py knows nothing of htagweb: tag.state changed in place and by
assignment, Python values that JSON lacks, self.call from init, generators, a tag.update()
loop in a background task, several apps on routes (handle() and 1.0's serve()). Here a
real browser drives them against a real uvicorn server, and every check reads the page.
"""

from __future__ import annotations

import json
import sys

import pytest
from playwright.sync_api import Page, Response, expect

COMPAT = [sys.executable, "-m", "uvicorn", "compat_server:app", "--port", "{port}"]
TICKER_APP = "compat_app.Ticker"
# The repr of compat_app.VALUES (so their types too); App shows it as JSON text.
VALUES_REPR = (
    "{'tuple': (1, 'a'), 'set': {3, 4}, 'when': datetime.datetime(2026, 12, 1, 9, 30), "
    "'day': datetime.date(2026, 12, 1), 'price': Decimal('9.90'), "
    "'id': UUID('12345678-1234-5678-1234-567812345678'), 'raw': b'\\x00\\xff', "
    "'nested': {'k': [(1, 2), {5}]}}"
)
VALUES_SHOWN = json.dumps(VALUES_REPR)
# Every text a selector's element shows, in order, on <html data-steps="...">.
RECORD_STEPS = """selector => {
    const root = document.documentElement;
    const current = () => {
        const element = document.querySelector(selector);
        return element === null ? null : element.textContent;
    };
    let last = current();
    root.dataset.steps = "";
    new MutationObserver(() => {
        const now = current();
        if (now === null || now === last) return;
        last = now;
        root.dataset.steps += (root.dataset.steps ? " | " : "") + now;
    }).observe(document, { subtree: true, childList: true, characterData: true });
}"""
RESTART_TIMEOUT = 20_000  # ms: the page's reconnection backoff grows while the server is away


def record_steps(page: Page, selector: str) -> None:
    """From now on, <html data-steps> lists each text the element shows (htag may replace
    the element itself), one step per change: pushes and generator steps each show."""
    page.evaluate(RECORD_STEPS, selector)


def steps(page: Page, *texts: str) -> None:
    expect(page.locator("html")).to_have_attribute("data-steps", " | ".join(texts))


def watch_sockets(page: Page) -> list[str]:
    opened: list[str] = []
    page.on("websocket", lambda socket: opened.append(socket.url))
    return opened


def load(page: Page, url: str, stream_of: str | None = None) -> None:
    """Load a page (it must be served: 200); for an HTTP page of the app `stream_of`, until
    its Server-Sent Events stream answered (a push made before that reaches nobody)."""
    if stream_of is None:
        response = page.goto(url)
        assert response is not None and response.status == 200, (url, response)
        return

    def is_stream(answer: Response) -> bool:
        return answer.request.method == "GET" and f"/_/{stream_of}?" in answer.url

    with page.expect_response(is_stream):
        response = page.goto(url)
        assert response is not None and response.status == 200, (url, response)


def session_seen_by_a_route(page: Page, base_url: str) -> dict[str, str]:
    """/session, with the page's cookie: each session key and the repr of its value."""
    response = page.request.get(base_url + "/session")
    assert response.ok, response.status
    return response.json()


def click(page: Page, selector: str) -> None:
    """A click in one of several pages: brought to the front first (Chromium runs a
    background tab's animation frames rarely, and Playwright waits for one before a click)."""
    page.bring_to_front()
    page.click(selector)


def app_shows(page: Page, listed: str, count: str, values: str, timeout: float = 5_000) -> None:
    expect(page.locator(".list")).to_have_text(listed, timeout=timeout)
    expect(page.locator(".count")).to_have_text(count, timeout=timeout)
    expect(page.locator(".values")).to_have_text(values, timeout=timeout)


@pytest.mark.parametrize("http_only", ["0", "1"], ids=["ws", "http"])
def test_tag_state_changed_in_place_and_assigned_survives_reloads_and_a_restart(
    serve_forked, new_page, tmp_path, http_only
):
    env = {"HTAGWEB_STATE_DIR": str(tmp_path / "state"), "COMPAT_HTTP_ONLY": http_only}
    server = serve_forked(COMPAT, env=env)
    page = new_page()
    sockets = watch_sockets(page)
    load(page, server.url)
    app_shows(page, "null", "0", json.dumps("None"))
    page.click(".keep")
    expect(page.locator(".values")).to_have_text(VALUES_SHOWN)
    for listed in ("[]", '["x"]', '["x", "x"]'):  # the first click assigns, then in place
        page.click(".add")
        expect(page.locator(".list")).to_have_text(listed)
    for count in ("1", "2"):
        page.click(".inc")
        expect(page.locator(".count")).to_have_text(count)

    page.reload()
    app_shows(page, '["x", "x"]', "2", VALUES_SHOWN)
    seen = session_seen_by_a_route(page, server.url)
    assert seen == {
        "compat_app.App": f"{{'values': {VALUES_REPR}, 'list': ['x', 'x'], 'count': 2}}"
    }

    # Stopped and started again on the same state directory (so the same signing key):
    # the open page reloads by itself, with the browser's cookie.
    for element in page.locator(".list, .count, .values").all():
        element.evaluate("element => { element.textContent = 'before the restart'; }")
    assert server.stop()
    expect(page.locator("#htagweb-reconnecting")).to_be_visible()
    serve_forked(COMPAT, env=env, port=server.port)
    app_shows(page, '["x", "x"]', "2", VALUES_SHOWN, timeout=RESTART_TIMEOUT)
    page.click(".add")  # in place, into a list the restarted server read from the store
    expect(page.locator(".list")).to_have_text('["x", "x", "x"]')
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("3")
    page.reload()
    app_shows(page, '["x", "x", "x"]', "3", VALUES_SHOWN)
    if http_only == "1":
        assert sockets == []
    else:
        assert len(sockets) >= 4  # one per page load, and tries while the server was away


def test_generators_and_an_update_loop_show_each_step_over_websocket_and_http(
    serve_forked, new_page
):
    """A WebSocket page (handle()) and an HTTP page (1.0's serve(): pushes as Server-Sent
    Events), each in its own browser context: the same app, two users."""
    server = serve_forked(COMPAT)
    for path, websocket in (("/ticker-ws", True), ("/ticker", False)):
        page = new_page()
        sockets = watch_sockets(page)
        if websocket:
            with page.expect_websocket():
                load(page, server.url + path)
        else:  # the loop's pushes must find the stream open
            load(page, server.url + path, stream_of=TICKER_APP)
        record_steps(page, ".ticks")
        page.click(".gen")
        steps(page, "a", "b", "c")
        page.click(".agen")
        steps(page, "a", "b", "c", "x", "y", "z")
        page.click(".loop")  # three tag.update() pushes from a task, after the answer
        steps(page, "a", "b", "c", "x", "y", "z", "[0]", "[0, 1]", "[0, 1, 2]")
        # The loop assigned [] then appended in place: the pushes saved the appends.
        assert session_seen_by_a_route(page, server.url) == {TICKER_APP: "{'ticks': [0, 1, 2]}"}
        assert len(sockets) == (1 if websocket else 0), (path, sockets)


def test_several_apps_on_routes_work_side_by_side_in_one_browser_context(serve_forked, new_page):
    """App at "/" (HTTP), CalledBack at /called (handle(), WebSocket, drawn by self.call
    from init), Ticker at /ticker (1.0's serve(), HTTP): one user, three pages at once."""
    server = serve_forked(COMPAT)
    home = new_page()
    called = home.context.new_page()
    ticker = home.context.new_page()
    sockets = {page: watch_sockets(page) for page in (home, called, ticker)}
    load(home, server.url)
    load(called, server.url + "/called")
    load(ticker, server.url + "/ticker", stream_of=TICKER_APP)
    # CalledBack's page comes empty; the app draws itself when the page calls it back.
    expect(called.locator(".clicks")).to_have_text("0")
    record_steps(ticker, ".ticks")

    click(home, ".inc")
    click(called, ".plus")
    click(ticker, ".gen")
    expect(home.locator(".count")).to_have_text("1")
    expect(called.locator(".clicks")).to_have_text("1")
    steps(ticker, "a", "b", "c")

    click(home, ".update")  # the app's own bound method named like htag's Tag.update
    click(called, ".plus")
    click(ticker, ".loop")
    expect(home.locator(".updates")).to_have_text("1")
    expect(called.locator(".clicks")).to_have_text("2")
    steps(ticker, "a", "b", "c", "[0]", "[0, 1]", "[0, 1, 2]")

    home.reload()  # a fresh App instance: the other apps' pages go on
    expect(home.locator(".count")).to_have_text("1")
    expect(home.locator(".updates")).to_have_text("1")
    click(called, ".plus")
    expect(called.locator(".clicks")).to_have_text("3")
    click(ticker, ".agen")
    steps(ticker, "a", "b", "c", "[0]", "[0, 1]", "[0, 1, 2]", "x", "y", "z")
    click(home, ".inc")
    expect(home.locator(".count")).to_have_text("2")
    called.reload()  # a fresh instance, drawn through self.call again
    expect(called.locator(".clicks")).to_have_text("0")
    click(called, ".plus")
    expect(called.locator(".clicks")).to_have_text("1")

    assert [len(sockets[page]) for page in (home, called, ticker)] == [0, 2, 0]
    seen = session_seen_by_a_route(home, server.url)
    assert seen == {
        "compat_app.App": "{'count': 2, 'updates': 1}",
        TICKER_APP: "{'ticks': [0, 1, 2]}",
    }
