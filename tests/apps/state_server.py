"""Serves state_app with the store named by STATE_STORE, and routes using request.session."""

import asyncio
import os

from starlette.responses import JSONResponse, PlainTextResponse
from state_app import App

from htagweb import Runner, rotate_session
from htagweb.sessions import SQLiteStore

env = os.environ.get
options = {
    "max_bytes": int(env("STATE_MAX_BYTES", "1048576")),
    "idle_expiry": float(env("STATE_IDLE_EXPIRY", "3600")),
}
if env("STATE_STORE") == "redis":
    from htagweb.sessions.redis import RedisStore

    store = RedisStore(env("STATE_REDIS_URL"), prefix=env("STATE_REDIS_PREFIX"), **options)
else:
    state_dir = env("STATE_DIR") or env("HTAGWEB_STATE_DIR")
    store = SQLiteStore(os.path.join(state_dir, "sessions.sqlite"), **options)

app = Runner(
    App,
    http_only=env("STATE_HTTP_ONLY", "1") == "1",
    debug=True,
    session_store=store,
    secret_key=env("STATE_SECRET"),
    session_cookie=env("STATE_COOKIE", "session"),
    session_cookie_path=env("STATE_COOKIE_PATH", "/"),
    timeout_inactivity=float(env("STATE_TIMEOUT_INACTIVITY", "0")),
    max_processes=int(env("STATE_MAX_PROCESSES", "100")),
)


async def login(request):
    request.session["user"] = request.query_params["user"]
    if "rotate" in request.query_params:
        rotate_session(request)
    return PlainTextResponse("logged in")


async def worker_pid(request):
    return PlainTextResponse(str(os.getpid()))  # which worker holds this connection


async def peek(request):
    return JSONResponse(dict(request.session))


async def put(request):
    request.session[request.query_params["key"]] = request.query_params["value"]
    return PlainTextResponse("ok")


# A page load held between reading its cookie and loading the app, for the race tests:
# /held waits for /release, and /arrived answers once /held is waiting.
arrived, released = asyncio.Event(), asyncio.Event()


async def held(request):
    arrived.set()
    await released.wait()
    return await request.app.handle(request, App)


async def wait_arrived(request):
    await arrived.wait()
    return PlainTextResponse("arrived")


async def release(request):
    released.set()
    return PlainTextResponse("released")


app.add_route("/held", held)
app.add_route("/arrived", wait_arrived)
app.add_route("/release", release)
app.add_route("/login", login)
app.add_route("/peek", peek)
app.add_route("/worker", worker_pid)
app.add_route("/put", put)
