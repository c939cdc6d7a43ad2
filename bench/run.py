"""The htagweb benchmark: a real server, each htagweb figure beside a raw Starlette baseline.

    python bench/run.py              the full run (under a minute on 2 CPUs)
    python bench/run.py --quick      a smoke run of a few seconds
    python bench/run.py --sessions   only the session stores' section (with --quick too)

One uvicorn worker runs bench/apps/bench_server.py: htagweb's Runner serving a counter,
and raw Starlette routes that answer the same request shapes, with bodies of the same
size, from the same process. Both are measured in the same run, interleaved where the
measure allows.

Then the session section: one fresh server per session store (memory, SQLite, Redis,
the last on a throwaway redis-server), all up together, and one user's clicks on each,
interleaved, to show what the store adds to one interaction.

Results go to bench/results/latest.md and latest.json; --sessions alone writes
bench/results/sessions.md and sessions.json instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import select
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from html import unescape
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
APPS_DIR = BENCH_DIR / "apps"
RESULTS_DIR = BENCH_DIR / "results"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Plain HTTP: one shared TLS context only spares each fresh client ~40 ms building its own.
TLS = ssl.create_default_context()
BUSY_SHARE = 0.05  # above this share of the machine's CPU taken by others, the report warns
JSON_HEADERS = {"Content-Type": "application/json"}

Send = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Sizes:
    """How many of each measure a run makes."""

    users: int = 200  # sequential new users
    crowd: int = 50  # users arriving at once
    rounds: int = 5  # crowds
    clicks: int = 500  # timed clicks per channel (WebSocket, HTTP)
    cpu_clicks: int = 1000  # clicks over which server CPU is summed
    idle_users: int = 20  # users whose process memory is read
    warmup: int = 20  # untimed page loads and clicks per path before measuring
    session_clicks: int = 1000  # timed clicks per store and button in the session section


QUICK = Sizes(
    users=20, crowd=10, rounds=2, clicks=50, cpu_clicks=100, idle_users=5, warmup=5,
    session_clicks=50,
)  # fmt: skip


# -- the server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_exit(pid: int, timeout: float) -> None:
    """Return once `pid` has ended or `timeout` has passed (awaited through a pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


class Child:
    """A child process in its own session, ready once a line of its output says so."""

    name = ""
    ready_text = ""

    def __init__(self) -> None:
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._started = False
        self._ready = threading.Event()

    def launch(self, command: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        """Start `command`; return once it is ready, or raise with its output."""
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the bench's Ctrl-C reaches it through end()
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        self._ready.wait(STARTUP_TIMEOUT)
        if not self._started:
            raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.output))

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if self.ready_text in line:
                self._started = True
                self._ready.set()
        self._ready.set()  # the process ended: let launch() say so

    def end(self, sig: signal.Signals) -> bool:
        """Send `sig` and wait for the exit; past STOP_TIMEOUT, kill. True if it was killed."""
        if self.process is None or self.process.poll() is not None:
            return False
        self.process.send_signal(sig)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return True
        return False


class Server(Child):
    """One uvicorn worker serving bench_server:app, with its own runtime and state dir.

    Every process of the server's tree (worker, supervisor, templates, app processes)
    inherits HTAGWEB_RUNTIME_DIR=<that dir>: that is how they are found. `env` adds
    variables, such as HTAGWEB_BENCH_STORE.
    """

    name = "the server"
    ready_text = "Application startup complete"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.env = env or {}
        self.scratch = Path(tempfile.mkdtemp(prefix="htb", dir="/tmp"))  # short: socket paths
        self.samples = self.scratch / "samples"
        self.samples.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "uvicorn", "bench_server:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
        ]  # fmt: skip
        self.marker = f"HTAGWEB_RUNTIME_DIR={self.scratch}".encode()

    def start(self) -> None:
        paths = [str(REPO_DIR), str(APPS_DIR), os.environ.get("PYTHONPATH", "")]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "PYTHONUNBUFFERED": "1",
            "HTAGWEB_RUNTIME_DIR": str(self.scratch),
            "HTAGWEB_STATE_DIR": str(self.scratch),
            "HTAGWEB_BENCH_SAMPLES": str(self.samples),
            **self.env,
        }
        self.launch(self.command, env, cwd=APPS_DIR)

    def pids(self) -> list[int]:
        """Every live process of the server's tree."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if self.marker in environ.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def stop(self) -> list[int]:
        """SIGINT, wait for the whole tree, delete the dir; returns pids that had to be killed."""
        self.end(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT
        for pid in self.pids():
            wait_for_exit(pid, max(0.0, deadline - time.monotonic()))
        leftovers = self.pids()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return leftovers


class RedisServer(Child):
    """A throwaway redis-server: a free port, no persistence, its own dir."""

    name = executable = "redis-server"
    ready_text = "Ready to accept connections"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="htbredis", dir="/tmp"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._stats: Any = None  # the bench's own connection, for INFO and CONFIG RESETSTAT

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        command = [
            self.executable, "--save", "", "--appendonly", "no",
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
        ]  # fmt: skip
        self.launch(command, dict(os.environ), cwd=self.dir)

    def stop(self) -> bool:
        """SIGTERM (nothing to save), wait, delete the dir; True if it had to be killed."""
        if self._stats is not None:
            self._stats.close()
        killed = self.end(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)
        return killed

    def stats(self) -> Any:
        if self._stats is None:
            import redis  # the "redis" extra: see missing()

            self._stats = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        return self._stats

    def reset_stats(self) -> None:
        self.stats().config_resetstat()

    def command_calls(self) -> dict[str, int]:
        """Calls of each command since reset_stats(), but the bench's own."""
        stats = self.stats().info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}
        return {name: n for name, n in calls.items() if name not in ("info", "config|resetstat")}

    @classmethod
    def missing(cls) -> str | None:
        """Why Redis cannot be measured here, or None."""
        if shutil.which(cls.executable) is None:
            return f"{cls.executable} is not installed"
        try:
            metadata.version("redis")
        except metadata.PackageNotFoundError:
            return "the redis package (htagweb[redis]) is not installed"
        return None


def cpu_seconds(pids: list[int]) -> dict[int, tuple[float, float]]:
    """CPU seconds of each pid: from /proc/<pid>/stat and from /proc/<pid>/schedstat.

    The first is utime + stime (fields 14 and 15), which the kernel rounds down to a
    clock tick per process: fine for long-lived processes, blind to one that ran 9 ms.
    The second (time on CPU, in ns) is exact.
    """
    times = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()  # fields[0] is field 3
            with open(f"/proc/{pid}/schedstat", "rb") as schedstat:
                on_cpu_ns = int(schedstat.read().split()[0])
            times[pid] = ((int(fields[11]) + int(fields[12])) / CLK_TCK, on_cpu_ns / 1e9)
    return times


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK, sum(ticks[:8]) / CLK_TCK


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/smaps_rollup."""
    figures = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                figures[parts[0].rstrip(":")] = int(parts[1])
    return figures


class CpuWatch:
    """How much CPU other processes of the machine took while the bench ran."""

    def __init__(self) -> None:
        self.start = machine_cpu()
        self.own = sum(os.times()[:2])

    def others(self, pids: list[int]) -> dict[str, float]:
        """Split of the CPU since the start; `pids` are the measured servers' processes."""
        busy, total = machine_cpu()
        tree = sum(exact for _, exact in cpu_seconds(pids).values())
        own = sum(os.times()[:2]) - self.own
        available = total - self.start[1]
        others = max(0.0, busy - self.start[0] - tree - own)
        return {
            "available_s": available,
            "server_s": tree,
            "bench_client_s": own,
            "others_s": others,
            "others_share": others / available if available else 0.0,
        }


# -- clients -----------------------------------------------------------------------------


def new_client(url: str) -> httpx.AsyncClient:
    """A fresh browser: its own cookie jar and connections."""
    return httpx.AsyncClient(base_url=url, verify=TLS, trust_env=False, timeout=60)


def check_page(response: httpx.Response) -> None:
    if response.status_code != 200 or not response.text.rstrip().endswith("</html>"):
        raise RuntimeError(f"not a full page: {response.status_code} {response.text[:300]!r}")


def find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"{pattern!r} not found in {text[:300]!r}")
    return match.group(1)


def button_click(text: str, name: str) -> str:
    """The JSON the browser's client sends for a click on the button of class `name`."""
    onclick = unescape(find(rf'<button[^>]*class="{name}"[^>]*onclick="([^"]*)"', text))
    payload = json.loads(find(r"interact\( (\{.*?\}) \);", onclick).replace("jevent(event)", "{}"))
    return json.dumps(payload)


@dataclass
class Page:
    """A counter page as served: where its interactions go, and its buttons' clicks."""

    endpoint: str
    instance: str
    click: str  # a click on "+"
    saving_clicks: dict[str, str]  # by button class: the "+" that also write the session
    pid: int  # the user's app process
    saved: int  # the count the session held when the page was made

    @classmethod
    def parse(cls, text: str) -> Page:
        return cls(
            endpoint=find(r'data-endpoint="([^"]*)"', text),
            instance=find(r'data-instance="([^"]*)"', text),
            click=button_click(text, "inc"),
            saving_clicks={name: button_click(text, name) for name in ("save", "inplace")},
            pid=int(find(r'class="pid"[^>]*>(\d+)<', text)),
            saved=int(find(r'class="saved"[^>]*>(\d+)<', text)),
        )


class KeepAlive:
    """One keep-alive HTTP/1.1 connection posting JSON, each request in a single write.

    Used for timed clicks: httpx costs about 1 ms of client CPU per request on a small
    machine, more than the server's own work, which would blur the comparison.
    """

    def __init__(self, port: int, cookie: str) -> None:
        self.port = port
        self.head = f"Host: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> KeepAlive:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    async def post(self, path: str, body: bytes) -> str:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.head, len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if not head.startswith(b"HTTP/1.1 200 ") or length is None:
            raise RuntimeError(f"unexpected answer {head[:300]!r}")
        return (await self.reader.readexactly(int(length.group(1)))).decode()


class User:
    """One browser on the counter: loads the page, clicks "+", checks the count shown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = new_client(url)
        self.page: Page | None = None
        self.count = 0

    async def load(self, path: str = "/") -> Page:
        response = await self.http.get(path)
        check_page(response)
        self.page, self.count = Page.parse(response.text), 0
        return self.page

    @property
    def interaction_path(self) -> str:
        assert self.page is not None
        return f"{self.page.endpoint}?i={self.page.instance}"

    def counted(self, answer: str) -> str:
        self.count += 1
        if f">{self.count}<" not in answer:
            raise RuntimeError(f"click {self.count} answered {answer[:300]!r}")
        return answer

    async def click_http(self) -> str:
        """A click through httpx (untimed uses, and the client overhead figure)."""
        assert self.page is not None
        response = await self.http.post(
            self.interaction_path, content=self.page.click, headers=JSON_HEADERS
        )
        return self.counted(response.text)

    async def raw_click_httpx(self) -> str:
        assert self.page is not None
        response = await self.http.post("/raw/click", content=self.page.click, headers=JSON_HEADERS)
        response.raise_for_status()
        return response.text

    def keep_alive(self) -> KeepAlive:
        port = int(self.url.rsplit(":", 1)[1])
        return KeepAlive(port, "; ".join(f"{k}={v}" for k, v in self.http.cookies.items()))

    def websocket(self, path: str) -> ws_connect:
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        return ws_connect("ws" + self.url[4:] + path, additional_headers={"Cookie": cookie})

    def http_sender(self, connection: KeepAlive, raw: bool, button: str = "inc") -> Send:
        """Clicks on the "+" of that class (see bench_counter.App)."""
        assert self.page is not None
        click = self.page.saving_clicks.get(button, self.page.click).encode()
        if raw:
            return lambda: connection.post("/raw/click", click)
        path = self.interaction_path

        async def send() -> str:
            return self.counted(await connection.post(path, click))

        return send

    def ws_sender(self, ws: ClientConnection, raw: bool) -> Send:
        assert self.page is not None
        click = self.page.click

        async def send() -> str:
            await ws.send(click)
            answer = str(await ws.recv())
            return answer if raw else self.counted(answer)

        return send


# -- measures ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]  # nearest rank


async def fresh_get(url: str, path: str) -> float:
    """Seconds from a new user's GET to its full page (connection included)."""
    async with new_client(url) as client:
        start = time.perf_counter()
        response = await client.get(path)
        elapsed = time.perf_counter() - start
    check_page(response)
    return elapsed


async def crowd(url: str, path: str, users: int) -> float:
    """Seconds until `users` new users arriving at once all have their full page."""
    clients = [new_client(url) for _ in range(users)]
    try:
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get(path) for client in clients))
        wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    for response in responses:
        check_page(response)
    return wall


async def alternate(senders: list[Send], n: int) -> list[list[float]]:
    """n timed round trips on each sender, interleaved so that drift hits all alike."""
    times: list[list[float]] = [[] for _ in senders]
    for _ in range(n):
        for sender, spent in zip(senders, times, strict=True):
            start = time.perf_counter()
            await sender()
            spent.append(time.perf_counter() - start)
    return times


async def server_cpu(
    server: Server, status: httpx.AsyncClient, action: Callable[[], Awaitable[object]], n: int
) -> dict[str, Any]:
    """Server CPU ms per action, summed over every process of the tree.

    "ms" is from /proc/<pid>/stat, "ms_exact" and the split by role from schedstat.
    Processes born during the run (forked app processes) count from zero.
    """
    before = cpu_seconds(server.pids())
    start = time.perf_counter()
    for _ in range(n):
        await action()
    wall = time.perf_counter() - start
    after = cpu_seconds(server.pids())
    roles = await server_roles(server, status)  # after the reading: its own CPU is not counted
    return {**cpu_spent(before, after, roles, n), "per_second": n / wall}


def cpu_spent(
    before: dict[int, tuple[float, float]],
    after: dict[int, tuple[float, float]],
    roles: dict[int, str],
    n: int,
) -> dict[str, Any]:
    """CPU ms per action between two cpu_seconds() readings, in all and by role."""
    stat = exact = 0.0
    by_role: dict[str, float] = {}
    for pid, (stat_after, exact_after) in after.items():
        stat_before, exact_before = before.get(pid, (0.0, 0.0))
        stat += stat_after - stat_before
        exact += exact_after - exact_before
        role = roles.get(pid, "other")
        by_role[role] = by_role.get(role, 0.0) + exact_after - exact_before
    return {
        "ms": stat * 1000 / n,
        "ms_exact": exact * 1000 / n,
        "by_role_ms_exact": {role: t * 1000 / n for role, t in sorted(by_role.items())},
        "processes": len(after),
    }


async def server_roles(server: Server, client: httpx.AsyncClient) -> dict[int, str]:
    assert server.process is not None
    status = (await client.get("/status")).json()
    roles = {server.process.pid: "worker", status["pid"]: "supervisor"}
    roles.update({pid: "template" for pid in status["templates"]})
    roles.update({p["pid"]: "app" for p in status["processes"]})
    return roles


@dataclass
class Row:
    """One line of the report; `target` bounds the htagweb figure from above."""

    metric: str
    unit: str
    htagweb: float
    raw: float | None = None
    target: float | None = None
    target_text: str = ""

    @property
    def ratio(self) -> float | None:
        return self.htagweb / self.raw if self.raw else None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.htagweb <= self.target


def spread(
    metric: str, unit: str, times: list[list[float]], scale: float, target: float | None
) -> list[Row]:
    """Median and p90 rows of one measure; the target applies to the median."""
    text = f"≤ {target:g} {unit}" if target is not None else ""
    app, raw = times
    return [
        Row(f"{metric}, median", unit, median(app) * scale, median(raw) * scale, target, text),
        Row(f"{metric}, p90", unit, p90(app) * scale, p90(raw) * scale),
    ]


async def write_samples(server: Server) -> tuple[str, dict[str, Any]]:
    """A real counter page and click answer, for the raw routes to send alike."""
    user = User(server.url)
    response = await user.http.get("/")
    check_page(response)
    user.page = Page.parse(response.text)
    (server.samples / "page.html").write_bytes(response.content)
    answer = await user.click_http()
    (server.samples / "answer.json").write_text(answer)
    await user.http.aclose()
    return answer, {"page_bytes": len(response.content), "click_answer_bytes": len(answer)}


async def page_loads(server: Server, sizes: Sizes) -> tuple[list[Row], dict[str, Any]]:
    """a. New users one after the other, and b. users arriving at once."""
    url = server.url
    for _ in range(sizes.warmup):
        await fresh_get(url, "/")
        await fresh_get(url, "/raw/page")
    # Crowds first, on a young server: past a few hundred app processes this VM's
    # memory grows costlier to touch (see the report's notes), which is the host's effect.
    walls: list[list[float]] = [[], []]
    for _ in range(sizes.rounds):
        walls[0].append(await crowd(url, "/", sizes.crowd))
        walls[1].append(await crowd(url, "/raw/page", sizes.crowd))
    times: list[list[float]] = [[], []]
    for _ in range(sizes.users):
        times[0].append(await fresh_get(url, "/"))
        times[1].append(await fresh_get(url, "/raw/page"))
    async with new_client(url) as status:  # for scale; not interleaved, as CPU is summed
        n = sizes.users // 2
        cpu = {
            "htagweb": await server_cpu(server, status, lambda: fresh_get(url, "/"), n),
            "raw": await server_cpu(server, status, lambda: fresh_get(url, "/raw/page"), n),
        }
    at_once = f"{sizes.crowd} users at once: all pages"
    rows = [
        *spread("New user: GET to full page", "ms", times, 1e3, 10),
        Row(f"{at_once}, median of {sizes.rounds}", "ms",
            median(walls[0]) * 1e3, median(walls[1]) * 1e3, 500, "≤ 500 ms"),
        Row(f"{at_once}, max of {sizes.rounds}", "ms",
            max(walls[0]) * 1e3, max(walls[1]) * 1e3, 500, "≤ 500 ms"),
    ]  # fmt: skip
    rounds = {"htagweb": [w * 1e3 for w in walls[0]], "raw": [w * 1e3 for w in walls[1]]}
    return rows, {"cpu_per_new_user": cpu, "crowd_rounds_ms": rounds}


async def clicks(server: Server, sizes: Sizes, answer: str) -> tuple[list[Row], dict[str, Any]]:
    """c, d. One user's clicks over WebSocket and HTTP; e. the server CPU they cost."""
    user = User(server.url)
    await user.load()
    async with (
        user.websocket(user.interaction_path) as app_ws,
        user.websocket("/raw/ws") as raw_ws,
    ):
        senders = [user.ws_sender(app_ws, raw=False), user.ws_sender(raw_ws, raw=True)]
        await alternate(senders, sizes.warmup)
        if await senders[1]() != answer:
            raise RuntimeError("/raw/ws does not answer the sample")
        ws_times = await alternate(senders, sizes.clicks)
    async with user.keep_alive() as connection:
        senders = [user.http_sender(connection, raw=False), user.http_sender(connection, raw=True)]
        await alternate(senders, sizes.warmup)
        if await senders[1]() != answer:
            raise RuntimeError("/raw/click does not answer the sample")
        http_times = await alternate(senders, sizes.clicks)
        cpu = {
            "htagweb": await server_cpu(server, user.http, senders[0], sizes.cpu_clicks),
            "raw": await server_cpu(server, user.http, senders[1], sizes.cpu_clicks),
        }
    # For scale: the same clicks through httpx, the client of the page-load figures.
    httpx_times = await alternate([user.click_http, user.raw_click_httpx], sizes.clicks // 5)
    await user.http.aclose()
    rows = [
        *spread("Click over WebSocket", "µs", ws_times, 1e6, None),
        *spread("Click over HTTP keep-alive", "µs", http_times, 1e6, None),
        Row("Server CPU per HTTP click, all processes", "ms",
            cpu["htagweb"]["ms"], cpu["raw"]["ms"]),
    ]  # fmt: skip
    httpx_us = {"htagweb": median(httpx_times[0]) * 1e6, "raw": median(httpx_times[1]) * 1e6}
    return rows, {"cpu_per_click": cpu, "httpx_click_median_us": httpx_us}


async def idle_memory(server: Server, sizes: Sizes) -> tuple[list[Row], dict[str, Any]]:
    """f. Memory of idle app processes, each user having loaded the page and clicked once."""
    users = [User(server.url) for _ in range(sizes.idle_users)]
    for user in users:
        await user.load()
        await user.click_http()
    await asyncio.sleep(1.0)
    roles = await server_roles(server, users[0].http)
    memory = []
    for user in users:
        assert user.page is not None
        if roles.get(user.page.pid) != "app":
            raise RuntimeError(f"pid {user.page.pid} is not an app process of this server")
        memory.append(smaps_rollup(user.page.pid))
        await user.http.aclose()
    private = [m["Private_Clean"] + m["Private_Dirty"] for m in memory]
    pss = [m["Pss"] for m in memory]
    rows = [
        Row("Idle user process: private memory, median", "kB",
            median(private), None, 3072, "≤ 3 MB"),
        Row("Idle user process: PSS, median", "kB", median(pss)),
    ]  # fmt: skip
    return rows, {
        "memory_kB": {
            "users": len(memory),
            "private": private,
            "pss": pss,
            "rss_median": median([m["Rss"] for m in memory]),
            "template": [smaps_rollup(pid) for pid, role in roles.items() if role == "template"],
            "app_processes_running": sum(1 for role in roles.values() if role == "app"),
        }
    }


async def measure(
    server: Server, sizes: Sizes, watch: CpuWatch
) -> tuple[list[Row], dict[str, Any]]:
    answer, details = await write_samples(server)
    rows: list[Row] = []
    for part in (
        page_loads(server, sizes),
        clicks(server, sizes, answer),
        idle_memory(server, sizes),
    ):
        part_rows, part_details = await part
        rows += part_rows
        details.update(part_details)
    details["machine_cpu"] = watch.others(server.pids())
    return rows, details


# -- the session section -----------------------------------------------------------------

STORES = ("memory", "sqlite", "redis")  # memory first: the baseline
LARGE_SESSION = "in place, 100 kB more"
# Kind of click -> the button clicked. The last kind runs once the session holds 100 more
# keys of 1 kB that the click does not touch: its cost should not move.
CLICKS = {
    "read": "inc",
    "read + write": "save",
    "in place": "inplace",
    LARGE_SESSION: "inplace",
}


@dataclass
class StoreCost:
    """One store's figures for one kind of click; `added_*` are against the memory store."""

    store: str
    click: str
    median_us: float
    p90_us: float
    cpu_us: float  # server CPU per click, every process of the store's server (schedstat)
    cpu_by_role_us: dict[str, float]
    redis_calls: dict[str, float] | None = None  # commands per click, for the Redis store
    added_median_us: float | None = None
    added_p90_us: float | None = None
    added_cpu_us: float | None = None


async def store_clicks(
    servers: dict[str, Server], redis: RedisServer | None, sizes: Sizes
) -> list[StoreCost]:
    """One user per server, clicking each button in turn, interleaved across the servers."""
    kinds = list(servers)
    users = {kind: User(servers[kind].url) for kind in kinds}

    def pids(kind: str) -> list[int]:
        extra = [redis.pid] if kind == "redis" and redis is not None else []
        return servers[kind].pids() + extra

    costs = []
    try:
        for user in users.values():
            await user.load()
        async with contextlib.AsyncExitStack() as stack:
            connections = [
                await stack.enter_async_context(users[kind].keep_alive()) for kind in kinds
            ]
            for click, button in CLICKS.items():
                if click == LARGE_SESSION:
                    for user in users.values():
                        (await user.http.get("/fill")).raise_for_status()
                senders = [
                    users[kind].http_sender(connection, raw=False, button=button)
                    for kind, connection in zip(kinds, connections, strict=True)
                ]
                await alternate(senders, sizes.warmup)
                if redis is not None:
                    redis.reset_stats()
                before = {kind: cpu_seconds(pids(kind)) for kind in kinds}
                times = await alternate(senders, sizes.session_clicks)
                after = {kind: cpu_seconds(pids(kind)) for kind in kinds}
                calls = redis.command_calls() if redis is not None else {}
                for kind, spent in zip(kinds, times, strict=True):
                    roles = await server_roles(servers[kind], users[kind].http)
                    if kind == "redis" and redis is not None:
                        roles[redis.pid] = "redis-server"
                    cpu = cpu_spent(before[kind], after[kind], roles, sizes.session_clicks)
                    costs.append(
                        StoreCost(
                            store=kind,
                            click=click,
                            median_us=median(spent) * 1e6,
                            p90_us=p90(spent) * 1e6,
                            cpu_us=cpu["ms_exact"] * 1e3,
                            cpu_by_role_us={
                                r: ms * 1e3 for r, ms in cpu["by_role_ms_exact"].items()
                            },
                            redis_calls={
                                c: n / sizes.session_clicks for c, n in sorted(calls.items())
                            }
                            if kind == "redis"
                            else None,
                        )
                    )
        for kind, user in users.items():  # the last click saved the count: a new page shows it
            clicks = user.count
            page = await user.load("/?saved")
            if page.saved != clicks:
                raise RuntimeError(f"{kind} store: a new page shows {page.saved}, not {clicks}")
    finally:
        for user in users.values():
            await user.http.aclose()
    baseline = {cost.click: cost for cost in costs if cost.store == "memory"}
    for cost in costs:
        base = baseline[cost.click]
        if cost is not base:
            cost.added_median_us = cost.median_us - base.median_us
            cost.added_p90_us = cost.p90_us - base.p90_us
            cost.added_cpu_us = cost.cpu_us - base.cpu_us
    return costs


def run_sessions(sizes: Sizes) -> tuple[dict[str, Any], list[int]]:
    """The session section on its own servers; returns its details and the pids killed."""
    redis_missing = RedisServer.missing()
    kinds = [kind for kind in STORES if kind != "redis" or redis_missing is None]
    redis = RedisServer() if "redis" in kinds else None
    servers: dict[str, Server] = {}
    killed: list[int] = []
    watch = CpuWatch()
    try:
        if redis is not None:
            redis.start()
        for kind in kinds:
            env = {"HTAGWEB_BENCH_STORE": kind}
            if redis is not None and kind == "redis":
                env["HTAGWEB_BENCH_REDIS_URL"] = redis.url
            servers[kind] = Server(env)
            servers[kind].start()
        costs = asyncio.run(store_clicks(servers, redis, sizes))
        measured = [pid for server in servers.values() for pid in server.pids()]
        machine = watch.others(measured + ([redis.pid] if redis is not None else []))
    except Exception:
        for kind, child in [*servers.items(), *([("redis-server", redis)] if redis else [])]:
            print(f"-- {kind}:\n" + "".join(child.output[-30:]), file=sys.stderr)
        raise
    finally:
        for server in servers.values():
            killed += server.stop()
        if redis is not None and redis.stop():
            killed.append(redis.pid)
    section = {
        "stores": kinds,
        "clicks": sizes.session_clicks,
        "redis_skipped": redis_missing,
        "server_command": shlex.join(["python", *next(iter(servers.values())).command[1:]]),
        "costs": [asdict(cost) for cost in costs],
        "machine_cpu": machine,
        "leftover_processes": len(killed),
    }
    return section, killed


# -- report ------------------------------------------------------------------------------


def number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if unit in ("µs", "kB") else f"{value:,.2f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| metric | htagweb | raw Starlette | ratio | target | met? |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.1f}x" if row.ratio is not None else "—"
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(
            f"| {row.metric} ({row.unit}) | {number(row.htagweb, row.unit)} "
            f"| {number(row.raw, row.unit)} | {ratio} | {row.target_text} | {met} |"
        )
    return "\n".join(lines)


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True)
    return done.stdout.strip()


def environment(server_command: str, sizes: Sizes) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in ("htag", "starlette", "uvicorn", "httpx", "websockets", "uvloop", "httptools"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--", ".", ":!bench")),
        "python": sys.version.split()[0],
        "htag": versions["htag"],
        "versions": versions,
        "cpu_count": os.cpu_count(),
        "command": shlex.join(["python", *sys.argv]),
        "server_command": server_command,
        "sizes": asdict(sizes),
    }


def cpu_note(what: str, cpu: dict[str, dict[str, Any]], unit: str) -> str:
    app, raw = cpu["htagweb"], cpu["raw"]
    roles = ", ".join(f"{role} {ms:.2f}" for role, ms in app["by_role_ms_exact"].items())
    return (
        f"- Server CPU per {what} (schedstat, exact): htagweb {app['ms_exact']:.2f} ms "
        f"({roles}), raw {raw['ms_exact']:.2f} ms; from /proc/<pid>/stat ticks: "
        f"{app['ms']:.2f} and {raw['ms']:.2f} ms. Sequential rate "
        f"{app['per_second']:,.0f} {unit}/s, raw {raw['per_second']:,.0f}."
    )


def markdown(info: dict[str, Any], rows: list[Row], details: dict[str, Any]) -> str:
    memory = details["memory_kB"]
    templates = "; ".join(
        f"private {t['Private_Clean'] + t['Private_Dirty']:,} kB, PSS {t['Pss']:,} kB"
        for t in memory["template"]
    )
    httpx_us = details["httpx_click_median_us"]
    machine = details["machine_cpu"]
    rounds = details["crowd_rounds_ms"]
    busy = machine["others_share"] > BUSY_SHARE
    notes = [
        "- raw Starlette: routes of the same worker process answering the same request shapes "
        f"with bodies of the same size (page {details['page_bytes']:,} bytes, click answer "
        f"{details['click_answer_bytes']} bytes), without htagweb.",
        "- Times are seen by the client and include its work: page loads use a fresh httpx "
        "client per user; clicks use websockets and a minimal keep-alive HTTP/1.1 client "
        f"(through httpx the same clicks take {httpx_us['htagweb']:,.0f} µs, "
        f"raw {httpx_us['raw']:,.0f} µs, median).",
        "- The server caps app processes at 150 (HTAGWEB_BENCH_MAX_PROCESSES), spares "
        "included; a run creates ~600 users. Crowds run first, on a young server: past a "
        "few hundred live processes this VM makes fresh memory several times costlier to "
        "touch (~3 µs a page under ~2 GB, 15-20 µs past it), an effect of the host.",
        f"- {len(rounds['htagweb'])} rounds of users arriving at once (ms): htagweb "
        f"{', '.join(f'{ms:.0f}' for ms in rounds['htagweb'])}; raw "
        f"{', '.join(f'{ms:.0f}' for ms in rounds['raw'])}.",
        cpu_note("new user's page", details["cpu_per_new_user"], "pages"),
        cpu_note("click", details["cpu_per_click"], "clicks"),
        f"- Memory read on {memory['users']} idle users (median RSS {memory['rss_median']:,.0f} "
        f"kB) among {memory['app_processes_running']} app processes; template: {templates}.",
        f"- Processes left after the server stopped: {details['leftover_processes']}.",
        f"- CPU during the run: server {machine['server_s']:.1f} s, bench client "
        f"{machine['bench_client_s']:.1f} s, other processes of the machine "
        f"{machine['others_s']:.1f} s of {machine['available_s']:.1f} s available"
        + (" — **the machine was busy: figures are pessimistic**" if busy else "")
        + ".",
    ]
    return "\n".join([header(info), "", table(rows), "", *notes, ""])


def header(info: dict[str, Any]) -> str:
    dirty = " + uncommitted changes outside bench/" if info["uncommitted_changes"] else ""
    return "\n".join(
        [
            "# htagweb benchmark",
            "",
            f"- date: {info['date']}, commit {info['commit']}{dirty}",
            f"- python {info['python']}, htag {info['htag']}, {info['cpu_count']} CPUs "
            "shared by the bench client and the server",
            f"- command: `{info['command']}`",
            f"- server: `{info['server_command']}` (one worker), app `bench/apps/bench_counter.py`",
        ]
    )


def us(value: float | None) -> str:
    return "—" if value is None else f"{value:+,.0f}" if value else "0"


def session_markdown(section: dict[str, Any]) -> str:
    costs = [StoreCost(**cost) for cost in section["costs"]]
    n = section["clicks"]
    lines = [
        "## Session cost added to one interaction",
        "",
        f"One fresh server per session store (HTAGWEB_BENCH_STORE), all up together; one user "
        f"per server clicks {n:,} times over HTTP keep-alive on each button, the servers taking "
        'turns click by click so that drift hits every store alike. *read*: the "+" button, '
        "which leaves the session alone: only the worker's lookup of the cookie's session "
        "touches the store (an app process reads its session when the app first uses it in an "
        'interaction). *read + write*: a "+" that also sets `tag.state["n"]`: one read, then '
        "the write, through to the store at once. *in place*: a \"+\" that changes a list "
        'kept in `tag.state` in place (`self.state["counts"][0] = n`), saved when the click '
        f"ends. *{LARGE_SESSION}*: the same, once the session holds 100 more keys of 1 kB "
        "that the click does not touch (written by a route): an app process reads and "
        "compares only the keys its code touches, so this should cost what *in place* does. "
        "*memory* is the baseline: MemoryStore, each process keeping its own sessions (no "
        "shared store). *added*: minus the memory store's figure for the same click.",
        "",
        "| store | click | median (µs) | p90 (µs) | added: median (µs) | added: p90 (µs) "
        "| server CPU (µs) | added CPU (µs) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cost in costs:
        lines.append(
            f"| {cost.store} | {cost.click} | {cost.median_us:,.0f} | {cost.p90_us:,.0f} "
            f"| {us(cost.added_median_us)} | {us(cost.added_p90_us)} | {cost.cpu_us:,.0f} "
            f"| {us(cost.added_cpu_us)} |"
        )
    lines.append("")
    for cost in costs:
        roles = ", ".join(f"{role} {t:,.0f}" for role, t in cost.cpu_by_role_us.items() if t >= 0.5)
        lines.append(f"- Server CPU per click, {cost.store}, {cost.click} (µs): {roles}.")
    for cost in costs:
        if cost.redis_calls is not None:
            calls = ", ".join(f"{name} {k:.2f}" for name, k in cost.redis_calls.items())
            lines.append(f"- Redis commands per click, {cost.click}: {calls}.")
    if section["redis_skipped"]:
        lines.append(f"- Redis not measured: {section['redis_skipped']}.")
    machine = section["machine_cpu"]
    busy = machine["others_share"] > BUSY_SHARE
    lines += [
        "- CPU time is summed over every process of each store's server (worker, supervisor, "
        "template, app processes), and the redis-server for Redis; the redis-server runs "
        "without persistence, on this machine.",
        f"- Servers: `{section['server_command']}` with HTAGWEB_BENCH_STORE="
        f"{'|'.join(section['stores'])}; processes left after they stopped: "
        f"{section['leftover_processes']}.",
        f"- CPU during the section: servers {machine['server_s']:.1f} s, bench client "
        f"{machine['bench_client_s']:.1f} s, other processes of the machine "
        f"{machine['others_s']:.1f} s of {machine['available_s']:.1f} s available"
        + (" — **the machine was busy: figures are pessimistic**" if busy else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


def run_main(sizes: Sizes) -> tuple[dict[str, Any], list[Row], dict[str, Any], list[int]]:
    """The main section: environment, rows, details, and the pids that had to be killed."""
    server = Server()
    watch = CpuWatch()
    try:
        server.start()
        rows, details = asyncio.run(measure(server, sizes, watch))
    except Exception:
        print("".join(server.output[-50:]), file=sys.stderr)  # the server's side of it
        raise
    finally:
        killed = server.stop()
    details["leftover_processes"] = len(killed)
    info = environment(shlex.join(["python", *server.command[1:]]), sizes)
    return info, rows, details, killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument(
        "--sessions", action="store_true", help="only the session section (to sessions.md)"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()

    if args.sessions:
        sessions, killed = run_sessions(sizes)
        info = environment(sessions["server_command"], sizes)
        report = "\n".join([header(info), "", session_markdown(sessions)])
        results: dict[str, Any] = {**info, "sessions": sessions}
        name = "sessions"
    else:
        info, rows, details, killed = run_main(sizes)
        sessions, session_killed = run_sessions(sizes)
        killed += session_killed
        report = "\n".join([markdown(info, rows, details), session_markdown(sessions)])
        results = {
            **info,
            "rows": [{**asdict(row), "ratio": row.ratio, "met": row.met} for row in rows],
            "details": details,
            "sessions": sessions,
        }
        name = "latest"

    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{name}.md").write_text(report)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(report)
    if killed:
        sys.exit(f"{len(killed)} server processes were left and had to be killed")


if __name__ == "__main__":
    main()
