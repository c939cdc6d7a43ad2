from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright
from playwright.sync_api import Page as PlaywrightPage
from support import Nginx, ServerProcess, redis_server

START_METHODS = ["fork", "spawn"]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(start_method: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start real servers (fork or spawn path); each is stopped and checked for leaks."""
    yield from _servers(start_method)


@pytest.fixture
def serve_forked() -> Iterator[Callable[..., ServerProcess]]:
    """Like `serve`, on the fork path only (for tests that are not about processes)."""
    yield from _servers("fork")


def _servers(start_method: str) -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(command: list[str], env: dict[str, str] | None = None, **kwargs) -> ServerProcess:
        server = ServerProcess(
            command, env={"HTAGWEB_START_METHOD": start_method, **(env or {})}, **kwargs
        )
        servers.append(server)
        return server.start()

    yield start
    leftovers = {}
    for server in servers:
        server.stop()
        leftovers[server.port] = server.leftovers()
        server.cleanup()
    # Every test also checks that stopping its servers left no process, socket or file.
    assert all(found == ([], []) for found in leftovers.values()), leftovers


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server (Debian's package) on a free port, for this test session."""
    with redis_server() as (url, _):
        yield url


def pytest_configure(config: pytest.Config) -> None:
    """tmp_path dirs go in a directory of this run, removed at its end (nothing stays in /tmp)."""
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="htp", dir="/tmp")
        config._htagweb_basetemp = config.option.basetemp  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    basetemp = getattr(config, "_htagweb_basetemp", None)
    if basetemp:
        shutil.rmtree(basetemp, ignore_errors=True)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (one per test module)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run scripts/test.sh, which installs it")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], PlaywrightPage]]:
    """Pages in fresh browser contexts (each its own cookie jar), closed after the test."""
    contexts: list[BrowserContext] = []

    def open_page() -> PlaywrightPage:
        context = browser.new_context()
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def nginx() -> Iterator[Callable[[str], Nginx]]:
    """Start nginx with a server block; stopped (and its files removed) after the test."""
    started: list[Nginx] = []

    def start(server_block: str) -> Nginx:
        proxy = Nginx(server_block)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
