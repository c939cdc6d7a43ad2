"""The benchmark server: htagweb serving the counter, an in-process htag host serving the
same counter, and raw Starlette routes beside them, all in one worker process.

`app` sends requests under /inproc/ to the in-process host (inproc_host.py: a Starlette
app of its own that keeps each user's HRenderer in this process, the reference htagweb
is measured against) and everything else, lifespan included, to htagweb's Runner.

The raw routes are routes of the Runner (its session middleware included) that answer
the same request shapes with bodies of the same size, so that each htagweb figure has a
floor measured alike:

    GET  /raw/page   the counter's page, as captured by the bench
    POST /raw/click  parses the JSON interaction, answers a click's JSON
    WS   /raw/ws     the same, one text message in, one out
    GET  /status     the supervisor's view (app and template pids)
    GET  /fill       puts 100 keys of 1 kB in the user's session (a session the app's
                     clicks do not touch but for one key)

The bench writes the captured samples (page.html, answer.json) into the directory
named by HTAGWEB_BENCH_SAMPLES before its first /raw/ request.

HTAGWEB_BENCH_STORE picks the session store:
    sqlite  (when unset) the Runner's default: a SQLite file in HTAGWEB_STATE_DIR
    memory  MemoryStore: each process keeps its own, so nothing is shared (the baseline)
    redis   RedisStore at HTAGWEB_BENCH_REDIS_URL
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from bench_counter import App
from inproc_host import PREFIX, InProcessHost
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from htagweb import Runner
from htagweb.sessions import MemoryStore, SessionStore

SAMPLES = Path(os.environ.get("HTAGWEB_BENCH_SAMPLES", "."))
# A production-like cap: the run creates ~600 users, and past a few hundred live processes
# this VM makes fresh memory much costlier to touch, which would swamp htagweb's own costs.
# "default" leaves htagweb's own (bench/capacity.py measures what the defaults hold).
CAP_SETTING = os.environ.get("HTAGWEB_BENCH_MAX_PROCESSES", "150")
MAX_PROCESSES = None if CAP_SETTING == "default" else int(CAP_SETTING)


def session_store() -> SessionStore | None:
    """The store HTAGWEB_BENCH_STORE names; None leaves the Runner's default (SQLite)."""
    kind = os.environ.get("HTAGWEB_BENCH_STORE", "sqlite")
    if kind == "sqlite":
        return None
    if kind == "memory":
        return MemoryStore()
    if kind == "redis":
        from htagweb.sessions.redis import RedisStore  # redis is an optional extra

        return RedisStore(os.environ.get("HTAGWEB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    raise ValueError(f"HTAGWEB_BENCH_STORE={kind!r}: expected sqlite, memory or redis")


# One user clicking back to back (~1,000/s) measures the runtime, not the rate limit; one
# bench client on one address stands for hundreds of users: no per-address limits.
runner = Runner(
    App,
    max_processes=MAX_PROCESSES,
    session_store=session_store(),
    interactions_per_second=0,
    new_sessions_per_ip=0,
    max_connections_per_ip=0,
)
# As many users as htagweb keeps processes: past that, the least recently active goes.
inproc = InProcessHost(App, max_users=MAX_PROCESSES or 150)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """/inproc/... to the in-process host, everything else to htagweb's Runner."""
    if scope["type"] != "lifespan" and scope["path"].startswith(PREFIX):
        await inproc.app(scope, receive, send)
    else:
        await runner(scope, receive, send)


@functools.cache
def page_sample() -> bytes:
    return (SAMPLES / "page.html").read_bytes()


@functools.cache
def answer_sample() -> dict[str, Any]:
    answer: dict[str, Any] = json.loads((SAMPLES / "answer.json").read_text())
    return answer


def answer_to(text: str | bytes) -> str:
    """Parse an interaction like htagweb does, and answer a click of the same size."""
    payload = json.loads(text)
    if not isinstance(payload, dict) or "id" not in payload:
        raise ValueError("not an interaction")
    return json.dumps(answer_sample())


async def raw_page(request: Request) -> Response:
    return HTMLResponse(page_sample())


async def raw_click(request: Request) -> Response:
    return Response(answer_to(await request.body()), media_type="application/json")


async def raw_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(answer_to(await websocket.receive_text()))
    except WebSocketDisconnect:
        pass


async def status(request: Request) -> Response:
    return JSONResponse(await request.app.gateway.status())


runner.add_route("/raw/page", raw_page)
runner.add_route("/raw/click", raw_click, methods=["POST"])
# Starlette 1.x: no add_websocket_route
runner.router.routes.append(WebSocketRoute("/raw/ws", raw_ws))
runner.add_route("/status", status)


async def fill(request: Request) -> Response:
    for n in range(100):
        request.session[f"other{n}"] = "x" * 1000
    return Response("filled")


runner.add_route("/fill", fill)
