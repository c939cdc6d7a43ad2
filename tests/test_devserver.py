"""`python -m htagweb`: every target form, the folder browser, refused paths, errors, --reload."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from support import REPO_DIR, STARTUP_TIMEOUT, User, free_port, wait_for_port
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

APP = """
from htag import Tag


class App(Tag.div):
    def init(self, **kwargs):
        self.count = 0
        self.shown = Tag.span("{label}", _class="count")
        self += self.shown
        self += Tag.button("+", _class="inc", _onclick=self.inc)

    def inc(self, event):
        self.count += 1
        self.shown.clear(self.count)
"""


def write_app(path: Path, label: str = "hello") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(APP.replace("{label}", label))


def devserver(*args: str) -> list[str]:
    return [sys.executable, "-m", "htagweb", *args, "--port", "{port}"]


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "htagweb", *args, "--port", "1"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def clicked(user: User, path: str = "/") -> str:
    page = user.get(path)
    return user.post(page, page.click("inc")).text


@pytest.mark.parametrize("target", ["main:App", "main.py", "main", "main.App", ""])
def test_every_target_form_serves_the_app_at_root(serve_forked, tmp_path, target):
    write_app(tmp_path / ("index.py" if not target else "main.py"))
    server = serve_forked(devserver(*([target] if target else [])), cwd=tmp_path)
    user = User(server.url)
    assert user.get().text_of("count") == "hello"
    assert ">1<" in clicked(user)


def test_a_folder_without_index_is_browsed_and_its_apps_open(serve_forked, tmp_path):
    write_app(tmp_path / "games" / "dice.py")
    (tmp_path / "notes.txt").write_text("not python")
    (tmp_path / "helpers.py").write_text("x = 1\n")
    server = serve_forked(devserver(), cwd=tmp_path)
    user = User(server.url)
    root = user.http.get("/").text
    assert "games/" in root and "helpers.py" in root and "notes.txt" not in root
    assert "/_dev/open" not in root  # helpers.py holds no htag app
    listing = user.http.get("/", params={"dir": "games"}).text
    assert "/_dev/open?path=games%2Fdice.py&amp;name=App" in listing
    assert ">1<" in clicked(user, "/_dev/open?path=games/dice.py&name=App")


def test_nothing_outside_the_folder_is_reachable(serve_forked, tmp_path):
    served = tmp_path / "served"
    outside = tmp_path / "outside"
    write_app(served / "ok.py")
    write_app(outside / "secret.py")
    (served / "link.py").symlink_to(outside / "secret.py")
    (served / "linkdir").symlink_to(outside, target_is_directory=True)
    server = serve_forked(devserver(), cwd=served)
    user = User(server.url)
    for path in ["../outside/secret.py", str(outside / "secret.py"), "link.py",
                 "linkdir/secret.py", "/etc/passwd", "ok.py/../../outside/secret.py"]:  # fmt: skip
        response = user.http.get("/_dev/open", params={"path": path, "name": "App"})
        assert response.status_code == 403, (path, response.status_code)
        assert "only paths inside" in response.text
    for folder in ["..", "linkdir", str(outside), "../outside"]:
        page = user.http.get("/", params={"dir": folder}).text
        assert "only paths inside" in page and "secret.py" not in page, folder
    assert user.http.get("/_dev/open", params={"path": "nope.py"}).status_code == 404
    assert ">1<" in clicked(user, "/_dev/open?path=ok.py&name=App")


def test_a_url_runs_no_code_but_listed_apps_and_only_for_this_machine(serve_forked, tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "tool.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    write_app(tmp_path / ".venv" / "lib.py")
    write_app(tmp_path / "ok.py")
    server = serve_forked(devserver(), cwd=tmp_path)
    user = User(server.url)
    response = user.http.get("/_dev/open", params={"path": "tool.py", "name": "x"})
    assert response.status_code == 404 and "declares no htag app" in response.text
    assert not marker.exists()  # the file was read, never run
    assert user.http.get("/_dev/open", params={"path": ".venv/lib.py"}).status_code == 403
    assert user.http.get("/_dev/open", params={"path": "ok.py\0"}).status_code == 403
    assert ".venv" not in user.http.get("/").text
    rebound = user.http.get("/", headers={"Host": "attacker.example:80"})
    assert rebound.status_code == 400  # DNS rebinding: a foreign name for this address


# What a page of another site makes the browser send: it says so in one of these.
CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Referer": "https://evil.example/x"},
    {"Origin": "https://evil.example"},
]
LURED_LINK = "/_dev/open?path=lured.py&name=App"


def write_lured_app(folder: Path) -> Path:
    """An htag app of the folder that leaves a marker file whenever it is imported."""
    marker = folder / "ran"
    write_app(folder / "lured.py")
    with (folder / "lured.py").open("a") as source:
        source.write(f"open({str(marker)!r}, 'w').close()\n")
    return marker


def test_another_sites_page_cannot_open_an_app(serve_forked, tmp_path):
    marker = write_lured_app(tmp_path)
    server = serve_forked(devserver(), cwd=tmp_path)
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        for headers in CROSS_SITE:  # an <img src>, a link, a form of evil.example
            refused = browser.get(LURED_LINK, headers={**headers, "Cookie": "session=not-logged"})
            assert refused.status_code == 403, (headers, refused.status_code)
            assert "another site" in refused.text
            assert not marker.exists(), f"{headers}: the file ran"
        assert server.wait_for_log("refused GET '/_dev/open'", count=3) == 3, server.log
        assert "not-logged" not in server.log  # the refusals are logged, never a cookie
        own = {"Sec-Fetch-Site": "same-origin", "Origin": server.url, "Referer": server.url}
        for headers in [own, {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "none"}, {}]:
            opened = browser.get(LURED_LINK, headers=headers)  # the folder's own link, typed, curl
            assert opened.status_code == 200, (headers, opened.status_code)
            assert marker.exists(), headers


def test_another_sites_page_cannot_drive_any_route(serve_forked, tmp_path):
    write_app(tmp_path / "main.py")
    server = serve_forked(devserver("main.py"), cwd=tmp_path)
    user = User(server.url)
    for headers in CROSS_SITE:
        for path in ("/", "/_htagweb/client.js", "/nowhere"):
            status = user.http.get(path, headers=headers).status_code
            assert status == 403, (headers, path, status)
    page = user.get()
    interaction = f"{page.endpoint}?i={page.instance}"
    for headers in CROSS_SITE:  # a click forged by evil.example: counts nothing
        refused = user.http.post(interaction, json=page.click("inc"), headers=headers)
        assert refused.status_code == 403, (headers, refused.status_code)
    ws_url = server.url.replace("http", "ws", 1) + interaction
    cookie = "; ".join(f"{k}={v}" for k, v in user.http.cookies.items())
    with pytest.raises(InvalidStatus) as handshake:
        connect(ws_url, additional_headers={"Cookie": cookie, "Sec-Fetch-Site": "cross-site"},
                open_timeout=30)  # fmt: skip
    assert handshake.value.response.status_code == 403
    assert ">1<" in user.post(page, page.click("inc")).text  # the first click that counted


@pytest.fixture
def other_site() -> Iterator[Callable[[str, Path], str]]:
    """A second web server on this machine (python's http.server) serving one page, at
    "localhost": another site than the dev server's 127.0.0.1 for the browser."""
    started: list[subprocess.Popen[bytes]] = []

    def serve_page(markup: str, folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text(markup)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(folder)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(process)
        assert wait_for_port(port, process, STARTUP_TIMEOUT), "http.server did not start"
        return f"http://localhost:{port}/"

    yield serve_page
    for process in started:
        process.terminate()
        process.wait(30)


def test_chromium_on_another_sites_page_runs_no_app(serve_forked, new_page, other_site, tmp_path):
    served = tmp_path / "served"
    marker = write_lured_app(served)
    server = serve_forked(devserver(), cwd=served)
    link = server.url + LURED_LINK
    evil = other_site(
        f'<!DOCTYPE html><title>prizes</title><img src="{link}">'
        f'<img referrerpolicy="no-referrer" src="{link}&amp;again=1">'  # Sec-Fetch-Site only
        f'<a class="prize" href="{link}">win a prize</a>',
        tmp_path / "evil",
    )
    page = new_page()
    page.goto(evil)  # returns at the load event: both images were answered
    assert not marker.exists(), "an <img> of another site ran the file"
    for url in (LURED_LINK, f"{LURED_LINK}&again=1"):
        assert server.wait_for_log(f'GET {url} HTTP/1.1" 403') == 1, server.log
    with page.expect_response(link) as followed:
        page.click(".prize")  # a top-level navigation from the other site
    assert followed.value.status == 403
    expect(page.locator("body")).to_contain_text("another site")
    assert not marker.exists(), "a link of another site ran the file"

    page.goto(server.url)  # typed by the developer: the folder's own link opens the app
    page.click("a.app")
    expect(page.locator(".count")).to_have_text("hello")
    assert marker.exists()


def test_files_whose_paths_look_alike_are_different_apps(serve_forked, tmp_path):
    write_app(tmp_path / "a" / "b.py", "from a/b.py")
    write_app(tmp_path / "a_b.py", "from a_b.py")
    server = serve_forked(devserver(), cwd=tmp_path)
    user = User(server.url)
    for path in ("a/b.py", "a_b.py", "a/b.py"):
        page = user.get(f"/_dev/open?path={path}&name=App")
        assert page.text_of("count") == f"from {path}"



@pytest.mark.parametrize(
    ("files", "target", "message"),
    [
        ({}, "nope.py", "htagweb: no file nope.py in "),
        ({"bad.py": "x = (\n"}, "bad.py", "htagweb: bad.py, line 1: '(' was never closed"),
        ({"plain.py": "App = 42\n"}, "plain.py", "htagweb: plain.py: App is not an htag Tag class"),
        ({"main.py": APP}, "main:Nope", "htagweb: main.py has no 'Nope'"),
        ({"boom.py": "raise RuntimeError('no db')\n"}, "boom",
         "htagweb: boom.py failed on import: RuntimeError: no db"),
    ],
)  # fmt: skip
def test_a_bad_target_gets_one_clear_line(tmp_path, files, target, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run_cli(tmp_path, target)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "Traceback" in run_cli(tmp_path, target, "--debug").stderr  # unless asked


def reloading_page(serve_forked, new_page, folder: Path):
    """A browser page on `python -m htagweb main.py --reload`, showing "version 1"."""
    write_app(folder / "main.py", "version 1")
    server = serve_forked(devserver("main.py", "--reload"), cwd=folder)
    page = new_page()
    page.goto(server.url)
    expect(page.locator(".count")).to_have_text("version 1")
    return page


def test_reload_shows_a_saved_change_in_the_open_page(serve_forked, new_page, tmp_path):
    page = reloading_page(serve_forked, new_page, tmp_path)
    write_app(tmp_path / "main.py", "version 2")
    expect(page.locator(".count")).to_have_text("version 2", timeout=15_000)  # ~1 s measured
    page.click(".inc")
    expect(page.locator(".count")).to_have_text("1")


def test_reload_shows_a_broken_save_in_the_page_then_the_fix(serve_forked, new_page, tmp_path):
    page = reloading_page(serve_forked, new_page, tmp_path)
    (tmp_path / "main.py").write_text("class App(:\n")
    expect(page.locator(".error")).to_contain_text("main.py, line 1", timeout=15_000)
    write_app(tmp_path / "main.py", "version 3")
    expect(page.locator(".count")).to_have_text("version 3", timeout=15_000)


def test_options_reach_the_server(serve_forked, tmp_path):
    write_app(tmp_path / "main.py")
    server = serve_forked(devserver("main.py", "--http-only", "--parano"), cwd=tmp_path)
    page = User(server.url).get()
    assert page.mode == "http" and 'data-parano="1"' in page.html
    help_text = run_cli(tmp_path, "--help").stdout
    for option in ("--host", "--port", "--http-only", "--parano", "--debug", "--reload"):
        assert option in help_text
