"""One session for web workers and the user's app processes, in real stores."""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from support import User, text_of_class, wait_for_exit

STATE_SERVER = [sys.executable, "-m", "uvicorn", "state_server:app", "--port", "{port}"]


@pytest.fixture(params=["sqlite", "redis"])
def store_env(request) -> dict[str, str]:
    """Environment choosing the store; two servers given it share the same sessions."""
    state_dir = Path(tempfile.mkdtemp(prefix="hts", dir="/tmp"))
    request.addfinalizer(lambda: __import__("shutil").rmtree(state_dir, ignore_errors=True))
    env = {"STATE_STORE": request.param, "STATE_DIR": str(state_dir), "STATE_SECRET": "k" * 32}
    if request.param == "redis":
        env["STATE_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["STATE_REDIS_PREFIX"] = f"t{uuid.uuid4().hex[:8]}:"
    return env


def state_of(actions: dict) -> dict:
    (update,) = actions["update"].values()
    return json.loads(text_of_class(update, "state").replace("&quot;", '"'))


def shown_state(page) -> dict:
    return json.loads(page.text_of("state").replace("&quot;", '"'))


def click(user: User, page, name: str) -> dict:
    answer = user.post(page, page.click(name))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_login_route_writes_are_seen_by_the_app_at_its_next_interaction(serve_forked, store_env):
    server = serve_forked(STATE_SERVER, env=store_env)
    user = User(server.url)
    page = user.get()
    assert user.http.get("/login?user=alice").text == "logged in"
    assert state_of(click(user, page, "show"))["user"] == "alice"


def test_app_writes_are_seen_by_request_session_at_the_next_request(serve_forked, store_env):
    server = serve_forked(STATE_SERVER, env=store_env)
    user = User(server.url)
    page = user.get()
    click(user, page, "inc")
    click(user, page, "inc")
    assert user.http.get("/peek").json()["state_app.App"] == {"clicks": 2}


def test_concurrent_writes_to_different_keys_both_survive(serve_forked, store_env):
    server = serve_forked(STATE_SERVER, env=store_env)
    user = User(server.url)
    page = user.get()

    def worker_writes() -> None:
        with httpx.Client(base_url=server.url, cookies=user.http.cookies) as other:
            for i in range(20):
                assert other.get(f"/put?key=w&value={i}").status_code == 200

    writer = threading.Thread(target=worker_writes)
    writer.start()
    for _ in range(20):
        click(user, page, "inc")
    writer.join()
    session = user.http.get("/peek").json()
    assert session["w"] == "19" and session["state_app.App"] == {"clicks": 20}


def test_forged_tampered_or_missing_cookies_get_a_fresh_session(serve_forked, store_env):
    server = serve_forked(STATE_SERVER, env=store_env)
    user = User(server.url)
    user.get()
    user.http.get("/login?user=alice")
    genuine = user.http.cookies["session"]
    forged = ["forged", genuine[:-2] + "xx", "A" * 22 + ".sig", "", "%ff%fe", genuine + "x"]
    for value in forged:
        response = httpx.get(server.url + "/peek", cookies={"session": value})
        assert response.status_code == 200 and response.json() == {}
        assert "set-cookie" not in response.headers  # it wrote nothing: nothing is stored
        written = httpx.get(server.url + "/put?key=k&value=v", cookies={"session": value})
        assert written.cookies["session"] not in (value, genuine)
    assert httpx.get(server.url + "/peek", cookies={"session": genuine}).json()["user"] == "alice"
    if store_env["STATE_STORE"] == "sqlite":
        db = sqlite3.connect(Path(store_env["STATE_DIR"]) / "sessions.sqlite")
        tokens = [row[0] for row in db.execute("SELECT token FROM tokens")]
        db.close()
        assert not any(value and value in token for value in forged for token in tokens)


def test_cookie_name_and_path_are_configurable(serve_forked):
    env = {"STATE_COOKIE": "sid", "STATE_COOKIE_PATH": "/app"}
    server = serve_forked(STATE_SERVER, env=env)
    header = httpx.get(server.url + "/put?key=k&value=v").headers["set-cookie"]
    assert header.startswith("sid=") and "Path=/app" in header


@pytest.mark.parametrize("trusted", [True, False])
def test_cookie_flags_and_https_behind_trusted_proxies_only(serve_forked, trusted):
    allowed = "127.0.0.1" if trusted else "192.0.2.1"
    server = serve_forked([*STATE_SERVER, "--forwarded-allow-ips", allowed])
    plain = httpx.get(server.url + "/put?key=k&value=v").headers["set-cookie"]
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Path=/" in plain
    assert "Secure" not in plain
    proxied = httpx.get(
        server.url + "/put?key=k&value=v", headers={"X-Forwarded-Proto": "https"}
    )
    assert ("Secure" in proxied.headers["set-cookie"]) is trusted


def test_values_that_are_not_json_fail_at_the_line_that_stored_them(serve_forked):
    server = serve_forked(STATE_SERVER)
    user = User(server.url)
    page = user.get()
    err = click(user, page, "bad")["err"]
    assert "JSON values" in err and 'self.state["thing"] = object()' in err
    assert state_of(click(user, page, "inc"))["clicks"] == 1  # the app goes on


def test_session_size_limit_is_a_clear_error_and_loses_nothing(serve_forked, store_env):
    server = serve_forked(STATE_SERVER, env={**store_env, "STATE_MAX_BYTES": "4096"})
    user = User(server.url)
    page = user.get()
    click(user, page, "inc")
    err = click(user, page, "big")["err"]
    assert "SessionTooLarge" in err and "maximum of 4096" in err
    assert user.http.get("/peek").json() == {"state_app.App": {"clicks": 1}}


def test_idle_sessions_expire_and_their_data_is_deleted(serve_forked, store_env):
    server = serve_forked(STATE_SERVER, env={**store_env, "STATE_IDLE_EXPIRY": "1"})
    user = User(server.url)
    user.http.get("/login?user=alice")
    assert user.http.get("/peek").json() == {"user": "alice"}
    time.sleep(2.2)  # idle expiry is a wall-clock duration: there is no event to wait for
    assert user.http.get("/peek").json() == {}  # a fresh session
    assert "session" in user.http.get("/put?key=k&value=v").cookies  # stored once written
    if store_env["STATE_STORE"] == "sqlite":  # Redis deletes expired keys itself
        db = sqlite3.connect(Path(store_env["STATE_DIR"]) / "sessions.sqlite")
        query = "SELECT count(*) FROM data WHERE value = '\"alice\"'"
        deadline = time.monotonic() + 10  # the workers purge every idle_expiry / 2
        while db.execute(query).fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert db.execute(query).fetchone()[0] == 0
        db.close()


def test_rotation_gives_a_new_id_keeps_data_and_restarts_the_apps(serve_forked, store_env):
    server = serve_forked(STATE_SERVER, env=store_env)
    user = User(server.url)
    page = user.get()
    click(user, page, "inc")
    old_cookie = user.http.cookies["session"]
    user.http.get("/login?user=bob&rotate")
    new_cookie = user.http.cookies["session"]
    assert new_cookie != old_cookie
    assert httpx.get(server.url + "/peek", cookies={"session": old_cookie}).json() == {}
    # What was opened before the rotation is cut (see tests/test_attacks.py): the page
    # reloads, and its next load gets a fresh app with the session's data.
    assert wait_for_exit(int(page.text_of("pid")), 10)
    assert user.post(page, page.click("show")).json() == {"reload": True}
    assert shown_state(user.get()) == {"clicks": 1, "user": "bob"}
    assert user.http.get("/peek").json()["user"] == "bob"


def test_state_survives_reload_inactivity_the_cap_and_a_restart(serve_forked, store_env):
    env = {**store_env, "STATE_TIMEOUT_INACTIVITY": "1", "STATE_MAX_PROCESSES": "1"}
    server = serve_forked(STATE_SERVER, env=env)
    user = User(server.url)
    page = user.get()
    click(user, page, "inc")
    page = user.get()  # F5
    assert shown_state(page)["clicks"] == 1
    click(user, page, "inc")
    assert wait_for_exit(int(page.text_of("pid")), 15)  # ended by inactivity
    page = user.get()
    click(user, page, "inc")
    User(server.url).get()  # another user: the cap of 1 ends our process
    assert wait_for_exit(int(page.text_of("pid")), 15)
    assert shown_state(user.get())["clicks"] == 3
    server.stop()
    restarted = serve_forked(STATE_SERVER, env=env)
    again = User(restarted.url)
    again.http.cookies.update(user.http.cookies)
    assert shown_state(again.get())["clicks"] == 3
