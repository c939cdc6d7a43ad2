"""Every example in examples/ served as its docstring says, and clicked in Chromium."""

from __future__ import annotations

import sys

from playwright.sync_api import expect
from support import REPO_DIR

EXAMPLES = REPO_DIR / "examples"


def example(name: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name)]


def test_counter(serve_forked, new_page):
    server = serve_forked(example("counter.py"), cwd=EXAMPLES)
    page = new_page()
    page.goto(server.url)
    plus, minus = page.get_by_role("button", name="+"), page.get_by_role("button", name="-")
    shown = page.locator("span")
    plus.click()
    expect(shown).to_have_text("1")
    plus.click()
    minus.click()
    expect(shown).to_have_text("1")


def test_timer_pushes_and_pauses(serve_forked, new_page):
    server = serve_forked(example("timer.py"), cwd=EXAMPLES)
    page = new_page()
    page.goto(server.url)
    expect(page.locator(".ticks")).to_have_text("2", timeout=10_000)  # pushed once a second
    page.click(".toggle")
    paused_at = int(page.locator(".ticks").inner_text())
    page.click(".toggle")
    expect(page.locator(".ticks")).to_have_text(str(paused_at + 1), timeout=10_000)


def test_state_is_kept_across_reloads(serve_forked, new_page):
    server = serve_forked(example("state.py"), cwd=EXAMPLES)
    page = new_page()
    page.goto(server.url)
    for text in ("milk", "bread"):
        page.fill(".entry", text)
        page.click(".add")
        expect(page.locator(".items li").last).to_have_text(text)
    page.reload()
    expect(page.locator(".items li")).to_have_text(["milk", "bread"])
    page.click(".clear")
    expect(page.locator(".items li")).to_have_count(0)


def test_query_params_reach_init(serve_forked, new_page):
    server = serve_forked(example("query_params.py"), cwd=EXAMPLES)
    page = new_page()
    page.goto(server.url + "/?name=<b>Ada</b>&times=2&vip")
    expect(page.locator(".greeting")).to_have_text(["Hello <b>Ada</b>!"] * 2)  # escaped
    expect(page.locator(".flags")).to_have_text("Flags: vip")
    page.get_by_role("link").click()
    expect(page.locator(".greeting")).to_have_count(3)


def test_main_serves_several_apps_on_several_routes(serve_forked, new_page):
    server = serve_forked(example("main.py"), cwd=EXAMPLES)
    page = new_page()
    page.goto(server.url)
    page.click("text=a counter")
    page.get_by_role("button", name="+").click()
    expect(page.locator("span")).to_have_text("1")
    page.goto(server.url + "/timer")
    expect(page.locator(".ticks")).to_have_text("1", timeout=10_000)
    page.goto(server.url + "/hello?name=Ada&times=2")
    expect(page.locator(".greeting")).to_have_count(2)
    page.goto(server.url + "/state")
    page.fill(".entry", "eggs")
    page.click(".add")
    expect(page.locator(".items li")).to_have_text(["eggs"])
    visits = page.request.get(server.url + "/api/visits").json()
    assert visits == {"counter page visits": 1}


def test_state_shows_what_was_typed_as_text(serve_forked, new_page):
    server = serve_forked(example("state.py"), cwd=EXAMPLES)
    page = new_page()
    page.goto(server.url)
    page.fill(".entry", "<img src=x onerror=alert(1)>")
    page.click(".add")
    expect(page.locator(".items li").last).to_have_text("<img src=x onerror=alert(1)>")
    expect(page.locator(".items img")).to_have_count(0)
