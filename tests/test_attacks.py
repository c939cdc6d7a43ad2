"""Security round 2: each test is an attack against a real server, and must fail to harm."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import Page, User, redis_server, text_of_class
from websockets.exceptions import ConnectionClosed, InvalidStatus

COUNTER = [sys.executable, "counter_server.py"]
URL_SERVER = [sys.executable, "-m", "uvicorn", "url_server:app", "--port", "{port}"]
STATE_SERVER = [sys.executable, "-m", "uvicorn", "state_server:app", "--port", "{port}"]
# A long keep-alive: each client stays with the worker its connection reached.
GUNICORN_STATE = [
    sys.executable, "-m", "gunicorn", "-w", "2", "-k", "uvicorn.workers.UvicornH11Worker",
    "-b", "127.0.0.1:{port}", "--keep-alive", "60", "--preload", "state_server:app",
]  # fmt: skip
VICTIM, ATTACKER = "192.0.2.10", "198.51.100.7"  # documentation addresses, in headers only


def state_in(message: str) -> dict:
    """What state_app shows in an answer carrying its state span."""
    (update,) = json.loads(message)["update"].values()
    return json.loads(text_of_class(update, "state"))


def page_state(page: Page) -> dict:
    """What state_app shows in a page it rendered."""
    return json.loads(page.text_of("state").replace("&quot;", '"'))


def count_in(answer: httpx.Response) -> int:
    (update,) = answer.json()["update"].values()
    return int(update.split(">")[1].split("<")[0])


# -- 1. A URL writes into the page ------------------------------------------------------


def test_a_query_parameter_is_only_ever_an_argument_of_init(serve_forked):
    server = serve_forked(URL_SERVER)
    user = User(server.url)
    page = user.get("/?js=alert(document.domain)&is_admin=1&name=ada")
    assert "alert(document.domain)" not in page.html.replace(
        page.text_of("kwargs"), ""
    )  # only where the app itself shows its arguments, escaped by JSON
    assert json.loads(page.text_of("kwargs").replace("&quot;", '"')) == {
        "js": "alert(document.domain)",
        "is_admin": "1",
        "name": "ada",
    }
    check = user.post(page, page.click("check"))
    assert ">checked False<" in json.dumps(check.json()["update"])  # as init set it


def test_a_query_parameter_never_becomes_content_of_an_app_without_init(serve_forked):
    server = serve_forked(URL_SERVER)
    response = User(server.url).http.get("/bare?%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    assert response.status_code == 200
    assert "onerror" not in response.text and "<img" not in response.text


@pytest.mark.parametrize("debug", ["1", "0"])
def test_an_init_error_quoting_the_url_shows_it_as_text(serve_forked, debug):
    server = serve_forked(URL_SERVER, env={"URL_DEBUG": debug})
    response = User(server.url).http.get("/strict", params={"n": "<img src=x onerror=alert(1)>"})
    assert response.status_code == 200 and "<img" not in response.text
    assert ("&lt;img src=x onerror=alert(1)&gt;" in response.text) is (debug == "1")


def test_the_development_folder_browser_takes_no_script_from_its_url(serve_forked, tmp_path):
    (tmp_path / "notes.py").write_text("x = 1\n")
    command = [sys.executable, "-m", "htagweb", "--port", "{port}"]
    server = serve_forked(command, cwd=tmp_path)
    page = User(server.url).http.get("/", params={"js": "alert(document.domain)"})
    assert page.status_code == 200 and "notes.py" in page.text
    assert "alert(document.domain)" not in page.text


# -- 2. Login cuts off what the old cookie opened ----------------------------------------


def test_login_closes_sockets_and_streams_opened_with_the_planted_cookie(serve_forked):
    server = serve_forked(STATE_SERVER, env={"STATE_HTTP_ONLY": "0"})
    attacker = User(server.url)
    page = attacker.get()
    victim = User(server.url)
    victim.http.cookies.update(attacker.http.cookies)  # the cookie the attacker planted
    stream_url = f"{page.endpoint}?i={page.instance}&p=attacker"
    with attacker.websocket(page) as socket, attacker.http.stream(
        "GET", stream_url, timeout=20
    ) as stream:
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        assert victim.http.get("/login?user=alice&rotate").text == "logged in"
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # the attacker's socket is closed by the server, not by a timeout
                socket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        assert "event: ended" in list(lines)  # the event stream ends as well
    assert attacker.post(page, page.click("show")).json() == {"reload": True}
    assert attacker.http.get("/peek").json() == {}  # the old cookie reaches nothing
    fresh = victim.get()  # the victim's next page load: a fresh app, state kept
    assert json.loads(fresh.text_of("state").replace("&quot;", '"'))["user"] == "alice"
    assert fresh.text_of("pid") != page.text_of("pid")


def test_a_page_load_racing_the_login_does_not_see_the_logged_in_session(serve_forked):
    server = serve_forked(STATE_SERVER)
    attacker = User(server.url)
    attacker.get()
    victim = User(server.url)
    victim.http.cookies.update(attacker.http.cookies)  # the cookie the attacker planted
    loaded: list[httpx.Response] = []
    racing = threading.Thread(target=lambda: loaded.append(attacker.http.get("/held")))
    racing.start()  # read the old cookie, and waits before loading the app
    assert attacker.http.get("/arrived").text == "arrived"
    assert victim.http.get("/login?user=alice&rotate").text == "logged in"
    assert attacker.http.get("/release").text == "released"
    racing.join(30)
    shown = Page(loaded[0].text).text_of("state").replace("&quot;", '"')
    assert json.loads(shown)["user"] is None  # not the victim's account
    assert json.loads(victim.get().text_of("state").replace("&quot;", '"'))["user"] == "alice"


def test_a_host_that_did_not_see_the_login_serves_the_old_cookie_nothing_of_it(
    serve_forked, redis_url
):
    shared = {
        "STATE_STORE": "redis",
        "STATE_REDIS_URL": redis_url,
        "STATE_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}:",
        "STATE_SECRET": "k" * 32,
        "STATE_HTTP_ONLY": "0",
    }
    host_a, host_b = serve_forked(STATE_SERVER, env=shared), serve_forked(STATE_SERVER, env=shared)
    attacker = User(host_b.url)
    page = attacker.get()
    victim = User(host_a.url)
    victim.http.cookies.update(attacker.http.cookies)  # the cookie the attacker planted
    with attacker.websocket(page) as socket:  # left open on host B
        socket.send(json.dumps(page.click("inc")))
        assert state_in(socket.recv(timeout=10)) == {"clicks": 1, "user": None}
        assert victim.http.get("/login?user=alice&rotate").text == "logged in"  # on host A
        socket.send(json.dumps(page.click("show")))
        shown = state_in(socket.recv(timeout=10))
    assert shown == {"clicks": 0, "user": None}  # the socket reaches an empty session
    state = json.loads(victim.get().text_of("state").replace("&quot;", '"'))
    assert state == {"clicks": 1, "user": "alice"}  # the data moved with the login


def test_a_click_with_the_cookie_of_before_the_login_reaches_no_process(serve_forked):
    server = serve_forked(STATE_SERVER)  # interactions over HTTP
    attacker = User(server.url)
    page = attacker.get()
    app_pid = int(page.text_of("pid"))
    assert state_in(attacker.post(page, page.click("inc")).text) == {"clicks": 1, "user": None}
    victim = User(server.url)  # the worker now remembers the token for a few seconds
    victim.http.cookies.update(attacker.http.cookies)  # the cookie the attacker planted
    assert victim.http.get("/login?user=alice&rotate").text == "logged in"
    assert not os.path.exists(f"/proc/{app_pid}")  # ended before the login's answer
    stale = attacker.post(page, page.click("inc"))  # at once: well within the memory's TTL
    assert (stale.status_code, stale.json()) == (410, {"reload": True})
    fresh = victim.get()  # the victim's reload: the new cookie, through the store
    assert page_state(fresh) == {"clicks": 1, "user": "alice"}
    answer = victim.post(fresh, fresh.click("inc"))
    assert state_in(answer.text) == {"clicks": 2, "user": "alice"}  # the stale click added none


def test_a_worker_that_did_not_see_the_login_lets_the_old_cookie_reach_no_process(serve_forked):
    server = serve_forked(GUNICORN_STATE, ready_lines=2, stop_signal=signal.SIGTERM)
    attacker = User(server.url)
    page = attacker.get()
    app_pid = int(page.text_of("pid"))
    by_worker: dict[int, User] = {}  # one keep-alive connection to each worker
    with contextlib.ExitStack() as closing:
        for _ in range(40):
            client = closing.enter_context(contextlib.closing(User(server.url)))
            client.http.cookies.update(attacker.http.cookies)  # the cookie the attacker planted
            by_worker.setdefault(int(client.http.get("/worker").text), client)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "the kernel gave every connection to one worker"
        (worker_a, victim), (worker_b, stale) = by_worker.items()
        for clicks, user in enumerate((victim, stale), 1):  # each worker remembers the token
            answer = user.post(page, page.click("inc"))
            assert state_in(answer.text) == {"clicks": clicks, "user": None}
        assert victim.http.get("/login?user=alice&rotate").text == "logged in"  # in worker A
        assert not os.path.exists(f"/proc/{app_pid}")  # ended host-wide
        answer = stale.post(page, page.click("inc"))  # in worker B, at once
        assert (answer.status_code, answer.json()) == (410, {"reload": True})
        assert int(stale.http.get("/worker").text) == worker_b != worker_a
        assert page_state(victim.get()) == {"clicks": 2, "user": "alice"}


# -- 3. Nobody can evict active users ----------------------------------------------------


def test_a_flood_of_page_loads_does_not_end_an_active_users_app(serve_forked):
    server = serve_forked(COUNTER, env={"COUNTER_HTTP_ONLY": "1", "COUNTER_MAX_PROCESSES": "8"})
    victim = User(server.url)
    page = victim.get()
    assert count_in(victim.post(page, page.click("inc"))) == 1
    for _ in range(30):
        assert httpx.get(server.url + "/").status_code == 200  # each a new, cookieless load
    assert count_in(victim.post(page, page.click("inc"))) == 2
    assert len(httpx.get(server.url + "/status").json()["processes"]) <= 8


def test_a_clicking_flood_from_one_address_ends_its_own_apps_first(serve_forked):
    server = serve_forked(COUNTER, env={"COUNTER_HTTP_ONLY": "1", "COUNTER_MAX_PROCESSES": "8"})
    victim = User(server.url)
    page = Page(victim.http.get("/", headers={"X-Forwarded-For": VICTIM}).text)
    assert count_in(victim.post(page, page.click("inc"))) == 1
    for _ in range(30):  # each flooding client loads a page and clicks, as a user would
        flooder = User(server.url)
        flooded = Page(flooder.http.get("/", headers={"X-Forwarded-For": ATTACKER}).text)
        assert count_in(flooder.post(flooded, flooded.click("inc"))) == 1
        flooder.close()
    assert count_in(victim.post(page, page.click("inc"))) == 2


def test_a_clicking_flood_spread_over_one_sites_ipv6_addresses_ends_its_own_apps(serve_forked):
    server = serve_forked(COUNTER, env={"COUNTER_HTTP_ONLY": "1", "COUNTER_MAX_PROCESSES": "8"})
    victim = User(server.url)
    page = Page(victim.http.get("/", headers={"X-Forwarded-For": VICTIM}).text)
    assert count_in(victim.post(page, page.click("inc"))) == 1
    for n in range(30):  # each from its own /64 of one /48, as one subscriber may hold
        flooder = User(server.url)
        address = f"2001:db8:7:{n:x}::1"
        flooded = Page(flooder.http.get("/", headers={"X-Forwarded-For": address}).text)
        assert count_in(flooder.post(flooded, flooded.click("inc"))) == 1
        flooder.close()
    assert count_in(victim.post(page, page.click("inc"))) == 2


# -- 4. Session rows for nothing ---------------------------------------------------------


def test_requests_that_load_no_page_and_write_nothing_store_no_session(serve_forked, tmp_path):
    env = {"STATE_DIR": str(tmp_path)}
    server = serve_forked(STATE_SERVER, env=env)
    endpoint = User(server.url).get().endpoint  # one page load: one session

    def rows() -> tuple[int, int]:
        db = sqlite3.connect(tmp_path / "sessions.sqlite")
        try:
            sessions = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
            tokens = db.execute("SELECT count(*) FROM tokens").fetchone()[0]
        finally:
            db.close()
        return sessions, tokens

    assert rows() == (1, 1)
    with httpx.Client(base_url=server.url) as anonymous:
        for _ in range(10):
            anonymous.cookies.clear()
            assert anonymous.get("/_htagweb/client.js").status_code == 200
            assert anonymous.get("/no/such/page").status_code == 404
            assert anonymous.post(endpoint, json={"id": 1, "method": "x"}).status_code == 410
            assert anonymous.get("/peek").json() == {}
            assert "set-cookie" not in anonymous.get("/peek").headers
    assert rows() == (1, 1)
    writer = httpx.get(server.url + "/put?key=k&value=v")
    assert "session" in writer.cookies
    assert rows() == (2, 2)


def test_a_page_load_refused_by_a_limit_stores_no_session(serve_forked):
    server = serve_forked(COUNTER, env={"COUNTER_NEW_SESSIONS_PER_IP": "2"})
    answers = [httpx.get(server.url + "/") for _ in range(20)]
    assert [a.status_code for a in answers].count(200) == 2
    assert all("set-cookie" not in a.headers for a in answers if a.status_code == 429)
    db = sqlite3.connect(server.state_dir / "sessions.sqlite")
    try:
        assert db.execute("SELECT count(*) FROM tokens").fetchone()[0] == 2
    finally:
        db.close()


def unread_bytes_on_port(port: int) -> int:
    """Bytes waiting in the receive queues of the server side of `port` (/proc/net/tcp)."""
    waiting = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                waiting += int(fields[4].split(":")[1], 16)
    return waiting


def test_a_stalled_session_store_does_not_stall_other_requests(serve_forked):
    with redis_server() as (url, redis_process):  # its own: the test stops it
        env = {"STATE_STORE": "redis", "STATE_REDIS_URL": url,
               "STATE_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}:"}  # fmt: skip
        server = serve_forked(STATE_SERVER, env=env)
        user = User(server.url)
        user.get()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        os.kill(redis_process.pid, signal.SIGSTOP)
        answers: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: answers.append(user.http.get("/peek")))
        waiting.start()
        deadline = time.monotonic() + 20
        while not unread_bytes_on_port(port):  # the worker's request waits in Redis's queue
            assert time.monotonic() < deadline, "the request never reached Redis"
            time.sleep(0.01)
        other = httpx.get(server.url + "/_htagweb/client.js", timeout=5)
        assert other.status_code == 200  # served while the store does not answer
        os.kill(redis_process.pid, signal.SIGCONT)
        waiting.join(30)
        assert answers and answers[0].status_code == 200


# -- 6. Smaller ones ---------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_directory_and_database_files_are_made_private(serve_forked, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    database = state / "sessions.sqlite"
    holder = sqlite3.connect(database)  # keeps the -wal and -shm files in place
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE unrelated (x)")
    files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    for path in files:
        path.chmod(0o644)
    try:
        server = serve_forked(COUNTER, env={"HTAGWEB_STATE_DIR": str(state)})
        User(server.url).get()  # a page load stores a session
        assert mode_of(state) == 0o700
        assert {path.name: mode_of(path) for path in files} == {p.name: 0o600 for p in files}
        assert mode_of(state / "secret.key") == 0o600
    finally:
        holder.close()


def nested(depth: int) -> dict:
    args: list = []
    for _ in range(depth):
        args = [args]
    return {"id": 1, "method": "__on__", "args": args}


def test_deeply_nested_interactions_get_400_and_sockets_go_on(serve_forked):
    server = serve_forked(COUNTER)
    user = User(server.url)
    page = user.get()
    response = user.post(page, nested(900))
    assert response.status_code == 400 and "nested deeper" in response.text
    assert "Traceback" not in server.log
    with user.websocket(page) as socket:
        socket.send(json.dumps(nested(900)))
        assert "nested deeper" in json.loads(socket.recv(timeout=10))["err"]
        socket.send(json.dumps(page.click("inc")))
        assert ">1<" in socket.recv(timeout=10)  # the relay lives on


def test_connections_are_capped_per_session_and_per_address(serve_forked):
    env = {"COUNTER_CONNECTIONS_PER_SESSION": "3", "COUNTER_CONNECTIONS_PER_IP": "5"}
    server = serve_forked(COUNTER, env=env)
    user = User(server.url)
    page = user.get()
    with contextlib.ExitStack() as opened:
        sockets = [opened.enter_context(user.websocket(page)) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            user.websocket(page)
        assert refused.value.response.status_code == 403
        events = user.http.get(f"{page.endpoint}?i={page.instance}")
        assert events.status_code == 429 and "one session" in events.text
        sockets.pop().close()
        with reopened(user, page) as again:  # a closed one is counted out
            again.send(json.dumps(page.click("inc")))
            assert ">1<" in again.recv(timeout=10)
        others = [User(server.url) for _ in range(4)]
        for other in others[:3]:  # 2 of the user's + 3: the address's 5
            opened.enter_context(other.websocket(other.get()))
        with pytest.raises(InvalidStatus) as refused:
            others[3].websocket(others[3].get())
        assert refused.value.response.status_code == 403
    assert server.wait_for_log("from one address") >= 1


@contextlib.contextmanager
def reopened(user: User, page: Page) -> Iterator:
    """A WebSocket opened once the server has counted a closed one out (it may lag)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket = user.websocket(page)
            break
        except InvalidStatus:
            assert time.monotonic() < deadline, "the closed socket was never counted out"
            time.sleep(0.02)  # a retry's pace: the count has no event a client can wait for
    with socket:
        yield socket


def test_a_socket_sending_malformed_messages_is_closed(serve_forked):
    server = serve_forked(COUNTER)
    user = User(server.url)
    page = user.get()
    with user.websocket(page) as socket:
        for _ in range(10):
            socket.send("[[[[")
            assert "bad interaction" in json.loads(socket.recv(timeout=10))["err"]
        socket.send("[[[[")
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert count_in(user.post(page, page.click("inc"))) == 1  # the app itself is unharmed
