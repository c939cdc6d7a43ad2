"""Serves the counter app; tests choose options through COUNTER_* variables."""

import os

from counter import App
from starlette.responses import PlainTextResponse

from htagweb import Runner

env = os.environ.get
app = Runner(
    App,
    debug=env("COUNTER_DEBUG") == "1",
    http_only=env("COUNTER_HTTP_ONLY") == "1",
    timeout_interaction=float(env("COUNTER_TIMEOUT_INTERACTION", "60")),
    timeout_inactivity=float(env("COUNTER_TIMEOUT_INACTIVITY", "0")),
    max_processes=int(env("COUNTER_MAX_PROCESSES")) if env("COUNTER_MAX_PROCESSES") else None,
    memory_reserve=int(env("COUNTER_MEMORY_RESERVE")) if env("COUNTER_MEMORY_RESERVE") else None,
    interactions_per_second=float(env("COUNTER_RATE", "200")),
    heartbeat=float(env("COUNTER_HEARTBEAT", "25")),
    parano=env("COUNTER_PARANO") == "1",
    max_processes_per_ip=int(env("COUNTER_MAX_PER_IP", "0")),
    new_sessions_per_ip=float(env("COUNTER_NEW_SESSIONS_PER_IP", "0")),
    max_message_bytes=int(env("COUNTER_MAX_MESSAGE", str(1024 * 1024))),
    max_connections_per_session=int(env("COUNTER_CONNECTIONS_PER_SESSION", "32")),
    max_connections_per_ip=int(env("COUNTER_CONNECTIONS_PER_IP", "512")),
)


async def worker_pid(request):
    return PlainTextResponse(str(os.getpid()))


async def status(request):
    from starlette.responses import JSONResponse

    return JSONResponse(await request.app.gateway.status())


async def parano_page(request):
    return await request.app.handle(request, App, parano=True)


app.add_route("/worker", worker_pid)
app.add_route("/parano", parano_page)
app.add_route("/status", status)

if __name__ == "__main__":
    app.run()
