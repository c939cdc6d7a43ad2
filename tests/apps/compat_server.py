"""Serves compat_app as htagweb 1.0's users do: Runner(App), serve() and handle() on routes."""

import os

from compat_app import App, CalledBack, Ticker
from starlette.responses import JSONResponse

from htagweb import Runner

if os.environ.get("COMPAT_POSITIONAL"):  # htagweb 1.0's order: obj, host, port, debug, ssl,
    app = Runner(App, "127.0.0.1", 8000, False, None, False, True, 60, 0)  # parano, http_only
else:
    app = Runner(App, http_only=os.environ.get("COMPAT_HTTP_ONLY", "1") == "1")


async def ticker(request):
    return await request.app.serve(request, Ticker)  # htagweb 1.0's (deprecated) name


async def ticker_ws(request):
    return await request.app.handle(request, Ticker, http_only=False)


async def called(request):
    """An app that draws itself through self.call from init, on a WebSocket page."""
    return await request.app.handle(request, CalledBack, http_only=False)


async def session(request):
    """What a route sees of the session the apps write."""
    return JSONResponse({key: repr(value) for key, value in request.session.items()})


app.add_route("/ticker", ticker)
app.add_route("/ticker-ws", ticker_ws)
app.add_route("/called", called)
app.add_route("/session", session)
