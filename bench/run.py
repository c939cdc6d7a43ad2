"""The htagweb benchmark: a real server, each htagweb figure beside an in-process htag host
(the reference) and raw Starlette (the floor).

    python bench/run.py              the full run (about a minute on 2 CPUs)
    python bench/run.py --quick      a smoke run of a few seconds
    python bench/run.py --sessions   only the session stores' section (with --quick too)

One uvicorn worker runs bench/apps/bench_server.py: htagweb's Runner serving a counter;
an in-process htag host serving the same counter (bench/apps/inproc_host.py: each user's
HRenderer kept in the worker's memory, as htag's own runners do: the cost of isolation
is htagweb's figures over its); and raw Starlette routes that answer the same request
shapes, with bodies of the same size. All three are measured in the same run, on the
same process tree, interleaved where the measure allows, and driven by the same client
code (the in-process page names its endpoint and instance as htagweb's does).

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
# Every measure's figures come in this order: htagweb, the in-process host, the raw floor.
HOSTS = ("htagweb", "inproc", "raw")
PAGES = {"htagweb": "/", "inproc": "/inproc/", "raw": "/raw/page"}


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
    burst_users: int = 50  # users clicking over WebSocket at once, each on its own socket
    burst_seconds: float = 2.0  # how long they click, per host and round
    burst_rounds: int = 3  # rounds of (htagweb, in-process, raw)
    memory_users: int = 100  # in-process users over which the worker's memory growth is read


QUICK = Sizes(
    users=20, crowd=10, rounds=2, clicks=50, cpu_clicks=100, idle_users=5, warmup=5,
    session_clicks=50, burst_users=10, burst_seconds=0.5, burst_rounds=1, memory_users=20,
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
    inproc: float | None = None  # the in-process htag host: the reference
    raw: float | None = None  # raw Starlette: the floor
    target: float | None = None
    target_text: str = ""

    @property
    def ratio(self) -> float | None:
        return self.htagweb / self.raw if self.raw else None

    @property
    def ratio_inproc(self) -> float | None:
        return self.htagweb / self.inproc if self.inproc else None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.htagweb <= self.target


def spread(
    metric: str, unit: str, times: list[list[float]], scale: float, target: float | None
) -> list[Row]:
    """Median and p90 rows of one measure (times in HOSTS order); the target applies to the
    median."""
    text = f"≤ {target:g} {unit}" if target is not None else ""
    medians = [median(t) * scale for t in times]
    p90s = [p90(t) * scale for t in times]
    return [
        Row(f"{metric}, median", unit, *medians, target=target, target_text=text),
        Row(f"{metric}, p90", unit, *p90s),
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
    inproc = User(server.url)  # for its sizes: the in-process host's page and click
    await inproc.load(PAGES["inproc"])
    inproc_answer = await inproc.click_http()
    inproc_page = (await inproc.http.get(PAGES["inproc"])).content
    await inproc.http.aclose()
    return answer, {
        "page_bytes": len(response.content),
        "click_answer_bytes": len(answer),
        "inproc_page_bytes": len(inproc_page),
        "inproc_click_answer_bytes": len(inproc_answer),
    }


async def page_loads(server: Server, sizes: Sizes) -> tuple[list[Row], dict[str, Any]]:
    """a. New users one after the other, and b. users arriving at once."""
    url = server.url
    for _ in range(sizes.warmup):
        for host in HOSTS:
            await fresh_get(url, PAGES[host])
    # Crowds first, on a young server: past a few hundred app processes this VM's
    # memory grows costlier to touch (see the report's notes), which is the host's effect.
    walls: list[list[float]] = [[] for _ in HOSTS]
    for _ in range(sizes.rounds):
        for host, wall in zip(HOSTS, walls, strict=True):
            wall.append(await crowd(url, PAGES[host], sizes.crowd))
    times: list[list[float]] = [[] for _ in HOSTS]
    for _ in range(sizes.users):
        for host, spent in zip(HOSTS, times, strict=True):
            spent.append(await fresh_get(url, PAGES[host]))
    async with new_client(url) as status:  # for scale; not interleaved, as CPU is summed
        n = sizes.users // 2
        cpu = {}
        for host in HOSTS:
            path = PAGES[host]
            cpu[host] = await server_cpu(server, status, lambda p=path: fresh_get(url, p), n)
    at_once = f"{sizes.crowd} users at once: all pages"
    rows = [
        *spread("New user: GET to full page", "ms", times, 1e3, 10),
        Row(f"{at_once}, median of {sizes.rounds}", "ms",
            *(median(w) * 1e3 for w in walls), target=500, target_text="≤ 500 ms"),
        Row(f"{at_once}, max of {sizes.rounds}", "ms",
            *(max(w) * 1e3 for w in walls), target=500, target_text="≤ 500 ms"),
    ]  # fmt: skip
    rounds = {host: [w * 1e3 for w in wall] for host, wall in zip(HOSTS, walls, strict=True)}
    return rows, {"cpu_per_new_user": cpu, "crowd_rounds_ms": rounds}


async def clicks(server: Server, sizes: Sizes, answer: str) -> tuple[list[Row], dict[str, Any]]:
    """c, d. One user's clicks over WebSocket and HTTP; e. the server CPU they cost.

    The htagweb user also sends the raw clicks; the in-process host has its own user
    (its own cookie), hence its own connections."""
    user, inproc = User(server.url), User(server.url)
    await user.load(PAGES["htagweb"])
    await inproc.load(PAGES["inproc"])
    async with (
        user.websocket(user.interaction_path) as app_ws,
        inproc.websocket(inproc.interaction_path) as inproc_ws,
        user.websocket("/raw/ws") as raw_ws,
    ):
        senders = [
            user.ws_sender(app_ws, raw=False),
            inproc.ws_sender(inproc_ws, raw=False),
            user.ws_sender(raw_ws, raw=True),
        ]
        await alternate(senders, sizes.warmup)
        if await senders[2]() != answer:
            raise RuntimeError("/raw/ws does not answer the sample")
        ws_times = await alternate(senders, sizes.clicks)
        ws_cpu = {
            host: await server_cpu(server, user.http, sender, sizes.cpu_clicks)
            for host, sender in zip(HOSTS, senders, strict=True)
        }
    async with user.keep_alive() as connection, inproc.keep_alive() as inproc_connection:
        senders = [
            user.http_sender(connection, raw=False),
            inproc.http_sender(inproc_connection, raw=False),
            user.http_sender(connection, raw=True),
        ]
        await alternate(senders, sizes.warmup)
        if await senders[2]() != answer:
            raise RuntimeError("/raw/click does not answer the sample")
        http_times = await alternate(senders, sizes.clicks)
        cpu = {
            host: await server_cpu(server, user.http, sender, sizes.cpu_clicks)
            for host, sender in zip(HOSTS, senders, strict=True)
        }
    # For scale: the same clicks through httpx, the client of the page-load figures.
    httpx_times = await alternate(
        [user.click_http, inproc.click_http, user.raw_click_httpx], sizes.clicks // 5
    )
    await user.http.aclose()
    await inproc.http.aclose()
    rows = [
        *spread("Click over WebSocket", "µs", ws_times, 1e6, None),
        *spread("Click over HTTP keep-alive", "µs", http_times, 1e6, None),
        Row("Server CPU per WebSocket click, all processes", "ms",
            *(ws_cpu[host]["ms_exact"] for host in HOSTS)),
        Row("Server CPU per HTTP click, all processes", "ms",
            *(cpu[host]["ms_exact"] for host in HOSTS)),
    ]  # fmt: skip
    httpx_us = {host: median(spent) * 1e6 for host, spent in zip(HOSTS, httpx_times, strict=True)}
    return rows, {
        "cpu_per_click": cpu,
        "cpu_per_ws_click": ws_cpu,
        "httpx_click_median_us": httpx_us,
    }


async def clicking(senders: list[Send], seconds: float) -> tuple[int, float]:
    """Every sender clicking back to back, all at once, for `seconds`: (answers, wall s)."""
    start = time.perf_counter()
    deadline = start + seconds

    async def clicker(send: Send) -> int:
        done = 0
        while time.perf_counter() < deadline:
            await send()
            done += 1
        return done

    done = await asyncio.gather(*(clicker(send) for send in senders))
    return sum(done), time.perf_counter() - start


async def burst(server: Server, sizes: Sizes) -> tuple[list[Row], dict[str, Any]]:
    """g. Many users clicking over WebSocket at once, each on its own socket, each sending
    its next click as soon as its answer comes: clicks answered per second.

    htagweb's users also send the raw clicks (on sockets of their own); the in-process
    host has its own users. Rounds take the hosts in turn."""
    users = [User(server.url) for _ in range(sizes.burst_users)]
    inproc_users = [User(server.url) for _ in range(sizes.burst_users)]
    try:
        for user, inproc in zip(users, inproc_users, strict=True):
            await user.load(PAGES["htagweb"])
            await inproc.load(PAGES["inproc"])
        async with contextlib.AsyncExitStack() as stack:

            async def opened(user: User, path: str) -> ClientConnection:
                return await stack.enter_async_context(user.websocket(path))

            senders = {
                "htagweb": [
                    u.ws_sender(await opened(u, u.interaction_path), raw=False) for u in users
                ],
                "inproc": [
                    u.ws_sender(await opened(u, u.interaction_path), raw=False)
                    for u in inproc_users
                ],
                "raw": [u.ws_sender(await opened(u, "/raw/ws"), raw=True) for u in users],
            }
            for host in HOSTS:  # warm-up, untimed
                await clicking(senders[host], sizes.burst_seconds / 4)
            figures: dict[str, dict[str, list[float]]] = {
                host: {"per_second": [], "server_ms_exact": [], "client_ms": []} for host in HOSTS
            }
            for _ in range(sizes.burst_rounds):
                for host in HOSTS:
                    before, own = cpu_seconds(server.pids()), sum(os.times()[:2])
                    done, wall = await clicking(senders[host], sizes.burst_seconds)
                    client = sum(os.times()[:2]) - own
                    spent = cpu_spent(before, cpu_seconds(server.pids()), {}, done)
                    figures[host]["per_second"].append(done / wall)
                    figures[host]["server_ms_exact"].append(spent["ms_exact"])
                    figures[host]["client_ms"].append(client * 1e3 / done)
    finally:
        await asyncio.gather(*(u.http.aclose() for u in users + inproc_users))
    rate = f"{sizes.burst_users} users clicking over WebSocket at once: clicks/s"
    rows = [
        Row(f"{rate}, median of {sizes.burst_rounds}", "clicks/s",
            *(median(figures[host]["per_second"]) for host in HOSTS)),
    ]  # fmt: skip
    return rows, {"burst": {"users": sizes.burst_users, "seconds": sizes.burst_seconds, **figures}}


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
            median(private), target=3072, target_text="≤ 3 MB"),
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


async def inproc_young(server: Server, sizes: Sizes) -> dict[str, Any]:
    """The in-process host on a young worker, before the other measures fill it.

    Server CPU per new user's page while it holds few users: htag 1.0's HRenderer walks
    every subclass of Tag for each new page, and each live tag has a class of its own,
    so this cost grows with the users it holds (the main measures run with it full).
    Then its memory per idle user: how much the worker's private memory grows over
    `memory_users` new users, a page load and a click each."""
    assert server.process is not None
    worker = server.process.pid  # uvicorn without --workers: the process it started
    url, path = server.url, PAGES["inproc"]
    async with new_client(url) as status:
        for _ in range(sizes.warmup // 4):
            await fresh_get(url, path)
        cpu = await server_cpu(server, status, lambda: fresh_get(url, path), sizes.warmup)
    cpu["live_users_after"] = 1 + sizes.warmup // 4 + sizes.warmup  # write_samples' one

    async def one_user() -> None:
        user = User(url)
        await user.load(path)
        await user.click_http()
        await user.http.aclose()

    before = smaps_rollup(worker)
    for _ in range(sizes.memory_users):
        await one_user()
    after = smaps_rollup(worker)
    growth = sum(after[k] - before[k] for k in ("Private_Clean", "Private_Dirty"))
    return {
        "cpu_per_new_user": cpu,
        "memory": {
            "users": sizes.memory_users,
            "worker_private_kB": growth,
            "per_user_kB": growth / sizes.memory_users,
        },
    }


async def measure(
    server: Server, sizes: Sizes, watch: CpuWatch
) -> tuple[list[Row], dict[str, Any]]:
    answer, details = await write_samples(server)
    details["inproc_young"] = await inproc_young(server, sizes)  # first: a young worker
    rows: list[Row] = []
    for part in (
        page_loads(server, sizes),
        clicks(server, sizes, answer),
        burst(server, sizes),
        idle_memory(server, sizes),
    ):
        part_rows, part_details = await part
        rows += part_rows
        details.update(part_details)
    private = details["memory_kB"]["private"]
    rows.append(
        Row("Private memory per idle user (htagweb: its process; in-process: worker's growth)",
            "kB", median(private), details["inproc_young"]["memory"]["per_user_kB"])
    )  # fmt: skip
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
    return f"{value:,.0f}" if unit in ("µs", "kB", "clicks/s") else f"{value:,.2f}"


def times(ratio: float | None, digits: int) -> str:
    return "—" if ratio is None else f"{ratio:.{digits}f}x"


def table(rows: list[Row]) -> str:
    lines = [
        "| metric | htagweb | in-process htag | htagweb / in-process | raw Starlette "
        "| htagweb / raw | target | met? |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(
            f"| {row.metric} ({row.unit}) | {number(row.htagweb, row.unit)} "
            f"| {number(row.inproc, row.unit)} | {times(row.ratio_inproc, 2)} "
            f"| {number(row.raw, row.unit)} | {times(row.ratio, 1)} | {row.target_text} | {met} |"
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
    app, inproc, raw = (cpu[host] for host in HOSTS)
    roles = ", ".join(f"{role} {ms:.2f}" for role, ms in app["by_role_ms_exact"].items())
    return (
        f"- Server CPU per {what} (schedstat, exact): htagweb {app['ms_exact']:.2f} ms "
        f"({roles}), in-process {inproc['ms_exact']:.2f} ms, raw {raw['ms_exact']:.2f} ms; "
        f"from /proc/<pid>/stat ticks: {app['ms']:.2f}, {inproc['ms']:.2f} and "
        f"{raw['ms']:.2f} ms. Sequential rate {app['per_second']:,.0f} {unit}/s, in-process "
        f"{inproc['per_second']:,.0f}, raw {raw['per_second']:,.0f}."
    )


def by_host(values: dict[str, list[float]], shown: str) -> str:
    """`shown` is a format spec for one value: "htagweb 1, 2; in-process 3, 4; raw 5, 6"."""
    names = {"htagweb": "htagweb", "inproc": "in-process", "raw": "raw"}
    return "; ".join(
        f"{names[host]} {', '.join(format(v, shown) for v in values[host])}" for host in HOSTS
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
    burst = details["burst"]
    young = details["inproc_young"]
    inproc_memory = young["memory"]
    busy = machine["others_share"] > BUSY_SHARE
    notes = [
        "- in-process htag: a Starlette app of its own in the same worker process "
        "(bench/apps/inproc_host.py) that keeps each user's htag HRenderer in the worker's "
        "memory, as htag's own runners do: no process per user, no session store, no "
        f"isolation (page {details['inproc_page_bytes']:,} bytes, click answer "
        f"{details['inproc_click_answer_bytes']} bytes). It keeps at most 150 users, as "
        "htagweb keeps 150 processes. *htagweb / in-process* is the cost of isolation.",
        "- raw Starlette: routes of htagweb's Runner in the same worker process (its session "
        "middleware included) answering the same request shapes with bodies of the same "
        f"size (page {details['page_bytes']:,} bytes, click answer "
        f"{details['click_answer_bytes']} bytes), without htagweb's app processes.",
        "- Times are seen by the client and include its work: page loads use a fresh httpx "
        "client per user; clicks use websockets and a minimal keep-alive HTTP/1.1 client "
        f"(through httpx the same clicks take {httpx_us['htagweb']:,.0f} µs, in-process "
        f"{httpx_us['inproc']:,.0f} µs, raw {httpx_us['raw']:,.0f} µs, median).",
        "- The server caps app processes at 150 (HTAGWEB_BENCH_MAX_PROCESSES), spares "
        "included; a run creates ~650 htagweb users. Crowds run first, on a young server: "
        "past a few hundred live processes this VM makes fresh memory several times costlier "
        "to touch (~3 µs a page under ~2 GB, 15-20 µs past it), an effect of the host.",
        f"- {len(rounds['htagweb'])} rounds of users arriving at once (ms): "
        f"{by_host(rounds, ',.0f')}.",
        "- Server CPU rows: schedstat (exact), summed over every process of the server's "
        "tree (worker, supervisor, templates, app processes), for each host alike; the "
        "in-process host and raw run in the worker, the other processes idle meanwhile.",
        cpu_note("new user's page", details["cpu_per_new_user"], "pages"),
        "- The in-process host's page cost grows with the users it holds (htag 1.0's "
        "HRenderer walks every subclass of Tag for a new page, and each live tag has a class "
        "of its own): the figures above are taken as it fills up to 150 users (full from the "
        "first crowd on, in a full run); on the young worker, "
        f"with {young['cpu_per_new_user']['live_users_after']} users or fewer, a new user's "
        f"page took {young['cpu_per_new_user']['ms_exact']:.2f} ms of server CPU.",
        cpu_note("WebSocket click", details["cpu_per_ws_click"], "clicks"),
        cpu_note("HTTP click", details["cpu_per_click"], "clicks"),
        f"- {burst['users']} users clicking at once, each on its own WebSocket, each sending "
        "its next click when its answer comes, for "
        f"{burst['seconds']:g} s per host and round, the hosts in turn; clicks/s by round: "
        f"{by_host({h: burst[h]['per_second'] for h in HOSTS}, ',.0f')}. Server CPU per "
        "click meanwhile (ms, schedstat, every process): "
        f"{by_host({h: burst[h]['server_ms_exact'] for h in HOSTS}, '.2f')}; the bench "
        "client's own CPU per click (ms): "
        f"{by_host({h: burst[h]['client_ms'] for h in HOSTS}, '.2f')} (it shares the "
        "machine's CPUs with the server).",
        f"- Memory read on {memory['users']} idle users (median RSS {memory['rss_median']:,.0f} "
        f"kB) among {memory['app_processes_running']} app processes; template: {templates}. "
        f"In-process: the worker's private memory grew by "
        f"{inproc_memory['worker_private_kB']:,} kB over {inproc_memory['users']} new users "
        "(a page and a click each), read first, on a young worker.",
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
            "rows": [
                {
                    **asdict(row),
                    "ratio": row.ratio,
                    "ratio_inproc": row.ratio_inproc,
                    "met": row.met,
                }
                for row in rows
            ],
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
