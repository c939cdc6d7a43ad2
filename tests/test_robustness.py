"""Bad input, broken apps and races: clear errors, nothing lost, nothing leaked."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest
from support import APPS_DIR, User, processes_with_env, wait_for_exit
from websockets.exceptions import ConnectionClosed

COUNTER = [sys.executable, "counter_server.py"]


def test_query_parameters_cannot_inject_attributes(serve):
    server = serve(COUNTER)
    page = User(server.url).get("/?_onmouseover=alert(1)&_style=x&a&b=2")
    assert "onmouseover" not in page.html and 'style="x' not in page.html
    assert json.loads(page.text_of("init")) == [["a"], {"b": "2"}]


def test_malformed_interactions_get_4xx_and_the_app_goes_on(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    user = User(server.url)
    page = user.get()
    url = f"{page.endpoint}?i={page.instance}"
    bodies = [
        b"not json",
        b"[1, 2]",
        b'{"id": [], "method": "x"}',
        b'{"id": 1, "method": 5}',
        b'{"id": 1, "method": "x", "args": {}}',
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting
        b"\xff\xfe",  # not UTF-8
        b'{"id": 1, "method": "x", "args": ["' + b"x" * (2 * 1024 * 1024) + b'"]}',
        b'{"id": 1, "method": "x", "seq": "1"}',
        b'{"id": 1, "method": "x", "seq": true}',
        b'{"id": 1, "method": "x", "seq": 0}',
        b'{"id": 1, "method": "x", "seq": 1e300}',
        b'{"id": 1, "method": "x", "seq": 99999999999999999999999}',
    ]
    for body in bodies:
        response = user.http.post(url, content=body)
        assert 400 <= response.status_code < 500, (body[:40], response.status_code)
        assert "Traceback" not in response.text
    answer = user.post(page, page.click("inc"))
    assert answer.status_code == 200 and ">1<" in answer.text
    assert "Traceback" not in server.log


def test_a_numbered_interaction_sent_twice_is_applied_once(serve_forked):
    """What the browser client does after a lost answer (see tests/test_browser.py)."""
    server = serve_forked(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    user = User(server.url)
    page = user.get()
    url = f"{page.endpoint}?i={page.instance}&p=tab1"
    click = {**page.click("inc"), "seq": 1}
    first = user.http.post(url, json=click).json()
    again = user.http.post(url, json=click).json()
    assert ">1<" in json.dumps(first["update"]) and first["seq"] == 1
    assert again == first  # the answer again (the first one was lost), not a second click
    other_tab = user.http.post(url.replace("tab1", "tab2"), json=click).json()
    assert ">2<" in json.dumps(other_tab["update"])  # numbers are per page
    assert ">3<" in json.dumps(user.http.post(url, json={**click, "seq": 2}).json()["update"])


def test_websocket_refuses_binary_and_bad_frames_and_stays_open(serve):
    server = serve(COUNTER)
    user = User(server.url)
    page = user.get()
    with user.websocket(page) as ws:
        ws.send(b"\x00\x01binary")
        assert "text frames" in json.loads(ws.recv(timeout=10))["err"]
        ws.send("[[[[")
        assert "bad interaction" in json.loads(ws.recv(timeout=10))["err"]
        ws.send(json.dumps(page.click("inc")))
        assert ">1<" in ws.recv(timeout=10)
    assert "Traceback" not in server.log


def test_older_websocket_tab_is_shown_the_live_instance(serve):
    server = serve(COUNTER)
    user = User(server.url)
    old_tab = user.get()
    with user.websocket(old_tab) as old_ws:
        old_ws.send(json.dumps(old_tab.click("inc")))
        assert ">1<" in old_ws.recv(timeout=10)
        new_tab = user.get()  # a new instance replaces the first
        old_ws.send(json.dumps(old_tab.click("inc")))
        answer = json.loads(old_ws.recv(timeout=10))
        assert answer["instance"] == new_tab.instance  # not a click on the dead instance
        assert '<span class="count"' in answer["update"]["0"] and ">0<" in answer["update"]["0"]
        with user.websocket(new_tab) as new_ws:
            new_ws.send(json.dumps(new_tab.click("inc")))
            assert ">1<" in new_ws.recv(timeout=10)


def test_handler_defeating_the_app_deadline_is_ended_by_the_worker(serve):
    server = serve(COUNTER, env={"COUNTER_TIMEOUT_INTERACTION": "1"})
    user = User(server.url)
    page = user.get()
    with user.websocket(page) as ws:
        ws.send(json.dumps(page.click("deaf")))
        assert "longer than 1s" in json.loads(ws.recv(timeout=30))["err"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert wait_for_exit(int(page.text_of("pid")), 10)


def test_app_failing_to_import_gets_a_clear_error_page(serve):
    server = serve([sys.executable, "-m", "uvicorn", "broken_server:app", "--port", "{port}"])
    user = User(server.url)
    for _ in range(2):  # and again: nothing hangs, nothing leaks
        response = user.http.get("/")
        assert response.status_code == 500
        assert "Reload the page" in response.text and "Traceback" not in response.text
    assert server.wait_for_log("cannot be imported in an app process") >= 1


def test_stale_restarts_never_lose_the_socket_nor_leak_processes(
    monkeypatch, request, start_method
):
    """Restart one user's process many times in a row (the exit report races the fork)."""
    from htagweb import appref
    from htagweb.web.gateway import Gateway

    scratch = Path(tempfile.mkdtemp(prefix="htw", dir="/tmp"))  # short: socket paths
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    runtime = scratch / "rt"
    monkeypatch.setenv("HTAGWEB_RUNTIME_DIR", str(runtime))
    monkeypatch.syspath_prepend(str(APPS_DIR))
    import counter

    ref, _ = appref.resolve(counter.App)
    message = {
        "op": "render", "init": [[], {}], "options": {},
        "page": {"client_src": "", "endpoint": "/_/counter.App", "mode": "http"},
        "session": {"id": "s", "store": {"kind": "memory", "max_bytes": 10**6, "idle_expiry": 60}},
    }  # fmt: skip

    async def scenario() -> list[int]:
        gateway = Gateway({"start_method": start_method, "max_processes": 8})
        await gateway.start()
        pids = []
        try:
            for _ in range(15):
                path = await gateway.ensure(ref, "session", stale=True)
                reply = await gateway.call_app(path, message, 30)
                assert "html" in reply
                pids.append(int(reply["html"].split('class="pid"')[1].split(">")[1].split("<")[0]))
            status = await gateway.status()
            assert [p["pid"] for p in status["processes"]] == [pids[-1]]
        finally:
            await gateway.close()
        return pids

    pids = asyncio.run(scenario())
    for pid in pids[:-1]:
        assert wait_for_exit(pid, 10)
    (pid_file,) = runtime.glob("*/supervisor.pid")
    supervisor = int(pid_file.read_text())
    os.kill(supervisor, signal.SIGTERM)  # its master is this test process: stop it by hand
    assert wait_for_exit(supervisor, 15)
    assert processes_with_env(f"HTAGWEB_RUNTIME_DIR={runtime}") == []
    assert not runtime.exists()
