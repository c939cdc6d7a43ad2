"""Test support: real server processes, pages parsed like a browser would, leak checks."""

from __future__ import annotations

import contextlib
import html.parser
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

APPS_DIR = Path(__file__).parent / "apps"
REPO_DIR = Path(__file__).parent.parent
SCREENSHOTS = REPO_DIR / "artifacts" / "screenshots"  # the README names this folder
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[Any], timeout: float) -> bool:
    """True once `port` takes connections; False if `process` ended or time ran out.

    Servers tell nothing when they listen (uvicorn says its app started before it does),
    so the port itself is asked.
    """
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return False


def wait_for_exit(pid: int, timeout: float) -> bool:
    """True once `pid` has ended (awaited through a pidfd, not polled)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def processes_with_env(marker: str) -> list[int]:
    """Pids whose environment holds `marker`: every process a test server started."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


class ServerProcess:
    """A real server (python, uvicorn or gunicorn) in its own runtime and state dirs."""

    def __init__(
        self,
        command: list[str],
        cwd: Path = APPS_DIR,
        env: dict[str, str] | None = None,
        ready_lines: int = 1,
        port: int | None = None,
        stop_signal: int = signal.SIGINT,
    ) -> None:
        self.stop_signal = stop_signal
        self.port = port or free_port()
        self.scratch = Path(tempfile.mkdtemp(prefix="htw", dir="/tmp"))  # short: socket paths
        self.runtime_dir = self.scratch / "rt"
        self.state_dir = self.scratch / "state"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_DIR), str(cwd)]),
            "PYTHONUNBUFFERED": "1",
            "HTAGWEB_RUNTIME_DIR": str(self.runtime_dir),
            "HTAGWEB_STATE_DIR": str(self.state_dir),
            "HTAGWEB_PORT": str(self.port),
            "HTAGWEB_HOST": "127.0.0.1",
            **(env or {}),
        }
        self.marker = f"HTAGWEB_RUNTIME_DIR={self.runtime_dir}"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.cwd = cwd
        self.ready_lines = ready_lines
        self.output: list[str] = []
        self._ready = threading.Event()
        self._new_output = threading.Condition()
        self._ready_count = 0
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        ready = self._ready.wait(STARTUP_TIMEOUT)
        if not ready or not wait_for_port(self.port, self.process, STARTUP_TIMEOUT):
            self.stop()
            raise AssertionError("server did not start:\n" + self.log)
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._new_output:
                self.output.append(line)
                self._new_output.notify_all()
            if "Application startup complete" in line:
                self._ready_count += 1
                if self._ready_count >= self.ready_lines:
                    self._ready.set()
        self._ready.set()  # ended: let start() report it

    @property
    def log(self) -> str:
        return "".join(self.output)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 10.0) -> int:
        """How often `text` is in the output, waiting (on new lines) until it is `count`."""
        with self._new_output:
            self._new_output.wait_for(lambda: self.log.count(text) >= count, timeout)
            return self.log.count(text)

    def supervisor_pid(self) -> int:
        (pid_file,) = self.runtime_dir.glob("*/supervisor.pid")
        return int(pid_file.read_text())

    def stop(self) -> bool:
        """Stop the server; False if it had to be killed (it did not stop within 30 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                return False
        return True

    def leftovers(self, timeout: float = 15.0) -> tuple[list[int], list[str]]:
        """Processes and runtime files still there after the server stopped."""
        deadline = time.monotonic() + timeout
        for pid in processes_with_env(self.marker):
            wait_for_exit(pid, max(0.0, deadline - time.monotonic()))
        alive = [pid for pid in processes_with_env(self.marker) if not is_zombie(pid)]
        files = [str(p) for p in self.runtime_dir.rglob("*")] if self.runtime_dir.exists() else []
        return alive, files

    def cleanup(self) -> None:
        self.stop()
        for pid in processes_with_env(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.scratch, ignore_errors=True)


def python_server(script: str, **kwargs: Any) -> ServerProcess:
    return ServerProcess([sys.executable, script], **kwargs)


# -- pages ---------------------------------------------------------------------------


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))


INTERACT_CALL = re.compile(r"interact\( (\{.*?\}) \);")


def interaction_of(js: str) -> dict[str, Any]:
    match = INTERACT_CALL.search(js)
    assert match, f"no interact() call in {js!r}"
    return json.loads(match.group(1).replace("jevent(event)", "{}"))


class Page:
    """An htag page as served: its client settings and the interactions it can send."""

    def __init__(self, text: str) -> None:
        self.html = text
        parser = _Elements()
        parser.feed(text)
        self.elements = parser.elements
        (client,) = [a for t, a in self.elements if t == "script" and "data-endpoint" in a]
        self.endpoint = client["data-endpoint"]
        self.mode = client["data-mode"]
        self.instance = client["data-instance"]

    def element(self, css_class: str) -> dict[str, str]:
        for _, attrs in self.elements:
            if css_class in attrs.get("class", "").split():
                return attrs
        raise AssertionError(f"no element of class {css_class!r} in the page")

    def click(self, css_class: str) -> dict[str, Any]:
        return interaction_of(self.element(css_class)["onclick"])

    def text_of(self, css_class: str) -> str:
        return text_of_class(self.html, css_class)


def text_of_class(markup: str, css_class: str) -> str:
    match = re.search(rf'<(\w+)[^>]*class="{css_class}"[^>]*>([^<]*)<', markup)
    assert match, f"no element of class {css_class!r} in {markup[:300]!r}"
    return match.group(2)


class User:
    """One browser: a cookie jar, pages it loaded, interactions over HTTP or WebSocket."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=60)

    def get(self, path: str = "/") -> Page:
        response = self.http.get(path)
        assert response.status_code == 200, (response.status_code, response.text[:500])
        return Page(response.text)

    def post(
        self, page: Page, payload: dict[str, Any], fresh_connection: bool = False
    ) -> httpx.Response:
        url = f"{page.endpoint}?i={page.instance}"
        if fresh_connection:  # a new TCP connection: under several workers, any may answer
            with httpx.Client(base_url=self.base_url, cookies=self.http.cookies, timeout=60) as c:
                return c.post(url, json=payload, headers={"Connection": "close"})
        return self.http.post(url, json=payload)

    def websocket(self, page: Page, extra: str = "") -> Any:
        """A WebSocket to the page's app; `extra`: more query parameters ("&p=...")."""
        from websockets.sync.client import connect

        ws_url = (
            self.base_url.replace("http", "ws", 1) + f"{page.endpoint}?i={page.instance}{extra}"
        )
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        return connect(ws_url, additional_headers={"Cookie": cookie}, open_timeout=30)

    def close(self) -> None:
        self.http.close()


# -- redis ---------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A real redis-server (Debian's package) on a free port: its URL and its process."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise AssertionError("redis-server is not installed: run scripts/test.sh, which does")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="htr", dir="/tmp"))
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # a test may have stopped it
        process.terminate()
        process.wait(10)
        process.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)


# -- nginx ---------------------------------------------------------------------------


class Nginx:
    """Debian's nginx in front of a test server; config, logs and pid in a scratch dir."""

    def __init__(self, server_block: str) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise AssertionError("nginx is not installed: run scripts/test.sh, which installs it")
        self.port = free_port()
        self.scratch = Path(tempfile.mkdtemp(prefix="htn", dir="/tmp"))
        user = "user root;" if os.geteuid() == 0 else ""  # workers write the temp dirs below
        temp = "\n".join(
            f"{kind}_temp_path {self.scratch}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (self.scratch / "nginx.conf").write_text(
            f"""
{user}
worker_processes 1;
daemon off;
pid {self.scratch}/nginx.pid;
error_log {self.scratch}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {self.scratch}/access.log;
    {temp}
    map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}
    server {{
        listen 127.0.0.1:{self.port};
        {server_block}
    }}
}}
"""
        )
        self.process = subprocess.Popen(
            [binary, "-p", str(self.scratch), "-c", str(self.scratch / "nginx.conf"),
             "-e", str(self.scratch / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if not wait_for_port(self.port, self.process, STARTUP_TIMEOUT):
            self.stop()
            raise AssertionError("nginx did not start:\n" + self.error_log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        path = self.scratch / "error.log"
        return path.read_text() if path.exists() else ""

    @property
    def access_log(self) -> str:
        path = self.scratch / "access.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # fast shutdown: a graceful one waits for open sockets
            self.process.wait(30)
        shutil.rmtree(self.scratch, ignore_errors=True)


def screenshot(page: Any, name: str) -> None:
    """A Playwright page's screenshot, kept as a test artifact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
