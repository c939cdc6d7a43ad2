"""An in-process htag host: the reference that htagweb's isolation is measured against.

A plain Starlette app that keeps every user's htag HRenderer in its own memory, as htag's
own web runners keep theirs: no process per user, no session store, no isolation (a
user's code runs in the server process, and htag finds a tag by its id among every
user's). What htagweb adds to serving the same app is its cost next to this.

    GET  /inproc/            a fresh instance of the app for this user (a page load); the
                             "inproc" cookie names the user, given on a first visit
    POST /inproc/interact    one interaction of the page ?i=<instance>: htag's actions, JSON
    WS   /inproc/interact    the same over a WebSocket opened with ?i=<instance>, one
                             message in, one answer out; tag.update() pushes go down it too

The page names its endpoint and instance the way htagweb's pages do (data-endpoint and
data-instance), and its buttons carry htag's own interact({...}) calls: the bench drives
both hosts with the same client code. A page load replaces the user's instance, as in
htagweb; an interaction naming another instance, or a user the host dropped, is answered
{"reload": true}. Past `max_users` users the least recently active one is dropped, as
htagweb ends its least recently used process past its cap. Interactions are not
serialised per user (htag's runners do not do it either); the bench's counter is
synchronous, so each interaction runs whole.

In a browser the page works over HTTP: CLIENT_JS posts each interaction to the endpoint.
"""

from __future__ import annotations

import collections
import json
import secrets
from typing import Any

from htag import Tag
from htag.render import HRenderer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PREFIX = "/inproc/"
ENDPOINT = PREFIX + "interact"
COOKIE = "inproc"
RELOAD = json.dumps({"reload": True})

# htag's HRenderer takes the page's interact() as `js`; start() and action() are htag's.
CLIENT_JS = """
async function interact( o ) {
    const page = document.querySelector("[data-endpoint]").dataset;
    const url = page.endpoint + "?i=" + encodeURIComponent(page.instance);
    action( await (await fetch(url, {method: "POST", body: JSON.stringify(o)})).text() );
}
window.addEventListener("DOMContentLoaded", start);
"""


class BadInteraction(ValueError):
    pass


class Live:
    """One user's live instance, and the session its tags see as tag.state."""

    __slots__ = ("instance", "renderer", "session")

    def __init__(self, renderer: HRenderer, instance: str, session: dict[str, Any]) -> None:
        self.renderer = renderer
        self.instance = instance
        self.session = session


class InProcessHost:
    """Serves `tag_class` from this process; `app` is the Starlette app (routes above)."""

    def __init__(self, tag_class: type[Tag], max_users: int) -> None:
        self.tag_class = tag_class
        self.max_users = max_users
        self.users: collections.OrderedDict[str, Live] = collections.OrderedDict()  # LRU first
        self.app = Starlette(
            routes=[
                Route(PREFIX, self.page, methods=["GET"]),
                Route(ENDPOINT, self.interact_http, methods=["POST"]),
                WebSocketRoute(ENDPOINT, self.interact_ws),
            ]
        )

    async def page(self, request: Request) -> Response:
        user = request.cookies.get(COOKIE)
        known = self.users.pop(user, None) if user else None
        session = known.session if known is not None else {}
        instance = secrets.token_urlsafe(12)
        marker = Tag.meta(_name="inproc", _data_endpoint=ENDPOINT, _data_instance=instance)
        renderer = HRenderer(self.tag_class, js=CLIENT_JS, session=session, statics=[marker])
        response = HTMLResponse(str(renderer))
        if not user:
            user = secrets.token_urlsafe(16)
            response.set_cookie(COOKIE, user, httponly=True, samesite="lax")
        self.users[user] = Live(renderer, instance, session)
        while len(self.users) > self.max_users:
            self.users.popitem(last=False)
        return response

    def live(self, user: str | None, instance: str | None) -> Live | None:
        """The user's instance if the page shows it (it becomes the most recently active)."""
        if not user:
            return None
        live = self.users.get(user)
        if live is None or live.instance != instance:
            return None
        self.users.move_to_end(user)
        return live

    async def interact_http(self, request: Request) -> Response:
        live = self.live(request.cookies.get(COOKIE), request.query_params.get("i"))
        if live is None:
            return Response(RELOAD, status_code=410, media_type="application/json")
        try:
            actions = await apply(live.renderer, await request.body())
        except BadInteraction as exc:
            return JSONResponse({"err": str(exc)}, status_code=400)
        return Response(json.dumps(actions), media_type="application/json")

    async def interact_ws(self, websocket: WebSocket) -> None:
        user, instance = websocket.cookies.get(COOKIE), websocket.query_params.get("i")
        await websocket.accept()
        live = self.live(user, instance)
        if live is None:
            await websocket.send_text(RELOAD)
            await websocket.close()
            return
        renderer = live.renderer

        async def push(actions: dict[str, Any]) -> bool:  # tag.update()
            await websocket.send_text(json.dumps(actions))
            return True

        renderer.sendactions = push
        try:
            while True:
                text = await websocket.receive_text()
                if self.live(user, instance) is None:  # a page load replaced it, or dropped
                    await websocket.send_text(RELOAD)
                    continue
                try:
                    actions = await apply(renderer, text)
                except BadInteraction as exc:
                    actions = {"err": str(exc)}
                await websocket.send_text(json.dumps(actions))
        except WebSocketDisconnect:
            pass
        finally:
            if renderer.sendactions is push:
                renderer.sendactions = None


async def apply(renderer: HRenderer, text: str | bytes) -> dict[str, Any]:
    """Run one interaction ({"id", "method", "args", "kargs", "event"}); htag's actions."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise BadInteraction("not JSON") from exc
    if not isinstance(payload, dict) or "id" not in payload or "method" not in payload:
        raise BadInteraction("not an interaction")
    actions: dict[str, Any] = await renderer.interact(
        payload["id"],
        payload["method"],
        payload.get("args") or [],
        payload.get("kargs") or {},
        payload.get("event"),
    )
    return actions
