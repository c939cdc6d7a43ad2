"""examples/oauth_example.py end to end: Chromium logs in at a real (local) OIDC provider.

The provider (tests/oidc_provider.py) and the example each run as a real server process;
both are stopped and checked for leftovers by the serve_forked fixture.
"""

from __future__ import annotations

import sys

import httpx
from playwright.sync_api import Page, expect
from support import REPO_DIR, ServerProcess, text_of_class

PROVIDER_SCRIPT = str(REPO_DIR / "tests" / "oidc_provider.py")
EXAMPLE_SCRIPT = str(REPO_DIR / "examples" / "oauth_example.py")
CLIENT_ID = "htagweb-example"
CLIENT_SECRET = "correct-horse-battery-staple"


def listening(server: ServerProcess) -> ServerProcess:
    """uvicorn logs "Application startup complete" (what serve_forked waits for) before it
    binds its socket: wait for the line it logs once it listens."""
    assert server.wait_for_log("Uvicorn running on", timeout=30) == 1, server.log
    return server


def start_provider(serve_forked) -> ServerProcess:
    provider = serve_forked(
        [sys.executable, PROVIDER_SCRIPT, "--port", "{port}",
         "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET],
    )  # fmt: skip
    return listening(provider)


def start_example(
    serve_forked, provider: ServerProcess, secret: str = CLIENT_SECRET
) -> ServerProcess:
    server = serve_forked(
        [sys.executable, EXAMPLE_SCRIPT],
        env={
            "OIDC_SERVER_METADATA_URL": f"{provider.url}/.well-known/openid-configuration",
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": secret,
        },
    )
    return listening(server)


def session_cookie(page: Page) -> str:
    (value,) = [c["value"] for c in page.context.cookies() if c["name"] == "session"]
    return value


def home_with_cookie(server: ServerProcess, cookie: str) -> str:
    """The home page as a client holding only this session cookie sees it."""
    response = httpx.get(server.url, cookies={"session": cookie}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return response.text


def log_in(page: Page, server: ServerProcess) -> None:
    """Alice logs in at the provider through the example's page."""
    page.goto(server.url)
    page.click(".login")  # to the provider, which approves and sends the browser back
    expect(page.locator(".hello")).to_have_text("Hello Alice")


def test_login_whoami_rotation_and_logout(serve_forked, new_page):
    provider = start_provider(serve_forked)
    server = start_example(serve_forked, provider)
    page = new_page()

    page.goto(server.url)
    expect(page.locator(".login")).to_have_text("Log in")
    expect(page.locator(".hello")).to_have_count(0)
    before_login = session_cookie(page)

    log_in(page, server)
    assert page.url.rstrip("/") == server.url  # back home, not stuck at /auth
    page.click(".whoami")  # answered by the app's own process, from the session
    expect(page.locator(".email")).to_have_text("alice@example.org")
    # uvicorn logs a request once answered: wait for the lines
    assert provider.wait_for_log("GET /authorize?") and provider.wait_for_log("POST /token")

    # rotated at login: a new cookie, and the pre-login one no longer opens the session
    logged_in = session_cookie(page)
    assert logged_in != before_login
    assert text_of_class(home_with_cookie(server, logged_in), "hello") == "Hello Alice"
    stale = home_with_cookie(server, before_login)
    assert "Hello Alice" not in stale
    assert text_of_class(stale, "login") == "Log in"

    with page.expect_request(lambda request: request.url.endswith("/logout")) as sent:
        page.click(".logout")  # the page's form
    assert sent.value.method == "POST"
    expect(page.locator(".login")).to_have_text("Log in")
    expect(page.locator(".hello")).to_have_count(0)
    page.click(".whoami")
    expect(page.locator(".email")).to_have_text("not logged in")
    assert session_cookie(page) != logged_in  # rotated at logout too
    assert "Hello Alice" not in home_with_cookie(server, session_cookie(page))
    assert "Hello Alice" not in home_with_cookie(server, logged_in)  # nor the old cookie


def test_another_site_cannot_log_the_user_out(serve_forked, new_page):
    provider = start_provider(serve_forked)
    server = start_example(serve_forked, provider)
    page = new_page()
    log_in(page, server)
    logged_in = session_cookie(page)

    # A GET, as another site's link, script navigation or <img> sends it: for a top-level
    # navigation the browser sends the SameSite=Lax cookie, as it does here.
    response = page.goto(server.url + "/logout")
    assert response is not None and response.status == 405
    # A POST from another site's page, carrying the cookie (which a browser would only
    # send from this site, a sibling host or port included).
    with httpx.Client(base_url=server.url, cookies={"session": logged_in}, timeout=30) as other:
        for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/"}):
            forged = other.post("/logout", headers=headers)
            assert forged.status_code == 403, (headers, forged.status_code)
    refusal = "logout refused: cross-site request from https://evil.example"
    assert server.wait_for_log(refusal, count=2) == 2, server.log

    assert text_of_class(home_with_cookie(server, logged_in), "hello") == "Hello Alice"
    page.goto(server.url)
    expect(page.locator(".hello")).to_have_text("Hello Alice")
    page.click(".whoami")
    expect(page.locator(".email")).to_have_text("alice@example.org")
    assert session_cookie(page) == logged_in  # the session was neither emptied nor rotated


def test_a_wrong_client_secret_is_a_clear_error_and_logs_nobody_in(serve_forked, new_page):
    provider = start_provider(serve_forked)
    server = start_example(serve_forked, provider, secret="not-the-secret")
    page = new_page()
    page.goto(server.url)

    with page.expect_response(lambda response: "/auth?" in response.url) as callback:
        page.click(".login")
    assert callback.value.status == 401
    expect(page.locator(".error")).to_have_text("Login failed: invalid_client")
    assert provider.wait_for_log('POST /token HTTP/1.1" 401') == 1

    page.goto(server.url)
    expect(page.locator(".login")).to_have_text("Log in")
    page.click(".whoami")
    expect(page.locator(".email")).to_have_text("not logged in")


def test_a_callback_with_a_forged_state_logs_nobody_in(serve_forked):
    provider = start_provider(serve_forked)
    server = start_example(serve_forked, provider)
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        assert "Log in" in browser.get("/").text
        response = browser.get("/auth", params={"code": "stolen", "state": "forged"})
        assert response.status_code == 401
        assert "Login failed: mismatching_state" in response.text
        assert "Hello" not in browser.get("/").text
    assert "/token" not in provider.log  # refused before any code was redeemed
