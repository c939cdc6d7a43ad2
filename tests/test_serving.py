"""The public snippets run unchanged, under python, uvicorn and gunicorn."""

from __future__ import annotations

import json
import signal
import sys

import httpx
import pytest
from support import User

GUNICORN = [sys.executable, "-m", "gunicorn", "-w", "4", "-k", "uvicorn.workers.UvicornH11Worker"]


@pytest.mark.parametrize(
    "script", ["hello_webserver.py", "hello_webserverws.py", "hello_appserver.py"]
)
def test_snippet_serves_hello_world_and_leaves_nothing(serve, script):
    server = serve([sys.executable, script])
    user = User(server.url)
    page = user.get("/")
    assert "hello world" in page.html
    assert page.mode == ("http" if script == "hello_webserver.py" else "ws")
    assert server.supervisor_pid() > 0
    server.stop()
    processes, files = server.leftovers()
    assert processes == [] and files == []


def test_asgi_app_under_uvicorn_workers(serve):
    server = serve(
        [sys.executable, "-m", "uvicorn", "hello_asgi:app", "--workers", "4", "--port", "{port}"],
        ready_lines=4,
    )
    for _ in range(8):  # new connections: several workers answer, one supervisor serves them
        assert "hello world" in httpx.get(server.url + "/").text
    assert len(list(server.runtime_dir.glob("*/supervisor.sock"))) == 1
    server.stop()
    assert server.leftovers() == ([], [])


def test_asgi_app_under_gunicorn_preload(serve):
    server = serve(
        [*GUNICORN, "-b", "127.0.0.1:{port}", "--preload", "hello_asgi:app"],
        ready_lines=4,
        stop_signal=signal.SIGTERM,  # gunicorn's graceful stop
    )
    for _ in range(8):
        assert "hello world" in httpx.get(server.url + "/").text
    assert len(list(server.runtime_dir.glob("*/supervisor.sock"))) == 1
    server.stop()
    assert server.leftovers() == ([], [])


def test_handle_and_add_route(serve):
    server = serve([sys.executable, "-m", "uvicorn", "routes_server:app", "--port", "{port}"])
    user = User(server.url)
    assert user.http.get("/").status_code == 404  # Runner() serves nothing at "/"
    assert user.http.get("/plain").text == "plain route"
    assert "hello world" in user.get("/hello").html
    page = user.get("/counter")
    assert page.mode == "http"  # handle(..., http_only=True)
    answer = user.post(page, page.click("inc"))
    assert answer.status_code == 200
    assert ">1<" in answer.text


def test_unknown_app_name_from_client_imports_nothing(serve):
    server = serve([sys.executable, "-m", "uvicorn", "routes_server:app", "--port", "{port}"])
    user = User(server.url)
    payload = {"id": 1, "method": "inc", "args": [], "kargs": {}, "event": {}}
    for fqn in ("os.system", "subprocess.Popen", "counter.App"):
        response = user.http.post(f"/_/{fqn}", json=payload)
        assert response.status_code == 410 and response.json() == {"reload": True}
    assert user.http.post("/_/..%2Fetc", json=payload).status_code == 404
    assert "Traceback" not in server.log


def test_a_runner_mounted_under_a_path_serves_its_pages_and_interactions(serve_forked):
    server = serve_forked(
        [sys.executable, "-m", "uvicorn", "mounted_server:app", "--port", "{port}"]
    )
    user = User(server.url)
    assert user.http.get("/").text == "the outer app"
    page = user.get("/app/")
    assert page.endpoint == "/app/_/counter.App"
    assert user.http.get("/app/_htagweb/client.js").status_code == 200
    assert ">1<" in user.post(page, page.click("inc")).text
    with user.websocket(page) as ws:
        ws.send(json.dumps(page.click("inc")))
        assert ">2<" in ws.recv(timeout=10)
