"""Drop-in for existing apps: what works on htag's desktop runners and htagweb 1.0 works here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from support import Page, User, text_of_class

COMPAT = [sys.executable, "-W", "always::DeprecationWarning", "-m", "uvicorn",
          "compat_server:app", "--port", "{port}"]  # fmt: skip
VALUES_REPR = (
    "{'tuple': (1, 'a'), 'set': {3, 4}, 'when': datetime.datetime(2026, 12, 1, 9, 30), "
    "'day': datetime.date(2026, 12, 1), 'price': Decimal('9.90'), "
    "'id': UUID('12345678-1234-5678-1234-567812345678'), 'raw': b'\\x00\\xff', "
    "'nested': {'k': [(1, 2), {5}]}}"
)


def click(user: User, page: Page, name: str) -> dict:
    answer = user.post(page, page.click(name))
    assert answer.status_code == 200, answer.text
    return answer.json()


def shown(answer: dict, css_class: str) -> str:
    """The text of an element of `css_class` in an answer that redrew the app."""
    (body,) = answer["update"].values()
    return text_of_class(body, css_class)


def test_state_changed_in_place_is_kept_across_reloads_and_a_restart(serve_forked, tmp_path):
    env = {"HTAGWEB_STATE_DIR": str(tmp_path / "state")}
    server = serve_forked(COMPAT, env=env)
    user = User(server.url)
    page = user.get()
    lists = [shown(click(user, page, "add"), "list") for _ in range(3)]
    assert [json.loads(text) for text in lists] == [[], ["x"], ["x", "x"]]
    assert shown(click(user, page, "inc"), "count") == "1"
    page = user.get()  # F5
    assert json.loads(page.text_of("list")) == ["x", "x"] and page.text_of("count") == "1"
    assert "'list': ['x', 'x']" in user.http.get("/session").text  # what a route sees
    server.stop()
    restarted = serve_forked(COMPAT, env=env)
    again = User(restarted.url)
    again.http.cookies.update(user.http.cookies)
    page = again.get()
    assert json.loads(page.text_of("list")) == ["x", "x"] and page.text_of("count") == "1"


def test_common_python_values_survive_exactly(serve_forked):
    server = serve_forked(COMPAT)
    user = User(server.url)
    page = user.get()
    assert json.loads(shown(click(user, page, "keep"), "values")) == VALUES_REPR
    assert json.loads(user.get().text_of("values").replace("&quot;", '"')) == VALUES_REPR
    session = user.http.get("/session").json()
    assert session["compat_app.App"] == "{'values': " + VALUES_REPR + "}"  # the worker's view


def test_a_value_changed_in_place_into_one_sessions_cannot_keep_is_an_error(serve_forked):
    server = serve_forked(COMPAT)
    user = User(server.url)
    page = user.get()
    click(user, page, "add")
    click(user, page, "add")
    answer = click(user, page, "bad")
    assert answer["err"]  # the page is told; nothing is lost without a word
    assert server.wait_for_log("session could not be saved") >= 1
    assert "builtins.object" in server.log and "compat_app.App" in server.log
    assert json.loads(user.get().text_of("list")) == ["x"]  # what was saved before stays


def test_an_apps_own_method_named_like_one_of_htags_is_callable(serve_forked):
    server = serve_forked(COMPAT)
    user = User(server.url)
    page = user.get()
    assert shown(click(user, page, "update"), "updates") == "1"
    assert "not callable" not in server.log


def test_htagweb_1_serve_still_serves_with_a_deprecation_warning(serve_forked):
    server = serve_forked(COMPAT)
    user = User(server.url)
    page = user.get("/ticker")
    assert page.endpoint.endswith("compat_app.Ticker")
    assert ">a<" in json.dumps(click(user, page, "gen"))
    assert server.wait_for_log("DeprecationWarning: Runner.serve(request, obj) is deprecated") == 1


def test_the_state_file_is_not_pickle(serve_forked, tmp_path):
    """Nothing read from a store may run code: the values are tagged JSON text."""
    import sqlite3

    env = {"HTAGWEB_STATE_DIR": str(tmp_path / "state")}
    server = serve_forked(COMPAT, env=env)
    user = User(server.url)
    click(user, user.get(), "keep")
    db = sqlite3.connect(Path(tmp_path / "state" / "sessions.sqlite"))
    try:
        (text,) = db.execute("SELECT value FROM data WHERE key = 'compat_app.App'").fetchone()
    finally:
        db.close()
    assert json.loads(text)["values"]["tuple"] == {" tuple": [1, "a"]}


def test_htagweb_1_positional_arguments_keep_their_meaning(serve_forked):
    server = serve_forked(COMPAT, env={"COMPAT_POSITIONAL": "1", "COMPAT_HTTP_ONLY": "0"})
    user = User(server.url)
    page = user.get()
    assert page.mode == "http"  # the 7th argument is http_only, as in 1.0 (ssl is the 5th)
    assert shown(click(user, page, "inc"), "count") == "1"


def test_htagweb_1_run_true_opens_a_browser(monkeypatch, tmp_path):
    import webbrowser

    import uvicorn

    from htagweb import Runner

    monkeypatch.setenv("HTAGWEB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("HTAGWEB_PORT", raising=False)
    monkeypatch.delenv("HTAGWEB_HOST", raising=False)
    opened, served = [], []
    monkeypatch.setattr(webbrowser, "open_new_tab", opened.append)  # not what is tested
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(options))
    Runner(None, "127.0.0.1", 8123).run(True)
    assert opened == ["http://localhost:8123"]
    assert served == [{"host": "127.0.0.1", "port": 8123}]
