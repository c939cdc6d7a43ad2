"""The web side: a Starlette app that serves htag apps and forwards their interactions.

    GET  /                   the app given to the constructor (or any route using handle())
    POST /_/{fqn}            one interaction over HTTP
    WS   /_/{fqn}            interactions and tag.update() pushes over a WebSocket
    GET  /_/{fqn}            tag.update() pushes as Server-Sent Events (HTTP pages)
    GET  /_htagweb/client.js the browser client

Query parameters of the last three: i, the app instance the page shows; p, the page's
own random id; r=1 when the page reconnects (it then gets the current tree).

Workers hold no user state: every request finds the user's app process through the
session id and a hash (see htagweb.runtime), whichever worker it reaches.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import html
import json
import logging
import os
import re
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import appref, limits
from ..appref import FQN_PATTERN, AppRef
from ..config import Config
from ..htag_internals import url_arguments
from ..sessions import SessionStore
from ..sessions.cookie import (
    NEW_SCOPE_KEY,
    SESSION_SCOPE_KEY,
    SessionCookie,
    SessionMiddleware,
    load_or_create_secret,
    refresh_session_cookie,
    store_session,
)
from ..wire.ipc import FrameError, encode_frame, read_frame
from ..wire.protocol import MAX_INTERACTION_BYTES, InvalidInteraction, parse_message
from . import guard
from .gateway import AppDied, AppGone, AppProcessError, AppTimeout, ClientLimited, Gateway
from .shutdown import stopping_event

logger = logging.getLogger(__name__)

CLIENT_JS = resources.files("htagweb").joinpath("static/client.js").read_bytes()
CLIENT_JS_VERSION = hashlib.sha256(CLIENT_JS).hexdigest()[:12]
DEADLINE_GRACE = 5.0  # the app process ends itself at its deadline; the worker waits this longer
WS_CLOSE_APP_GONE = 4404
WS_CLOSE_POLICY = 1008
WS_CLOSE_TOO_BIG = 1009
PAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_STREAM_PROOF = 100  # parano: an event stream's e=n.proof (checked by the app process)
INTERNAL_PATHS = ("/_/", "/_htagweb/")  # htagweb's own endpoints (never read request.session)
MAX_MALFORMED_MESSAGES = 10  # a WebSocket sending more is closed: no page of ours does
# Per client address, defaults that a crowd behind one proxy does not reach: past them a
# page load gets 429, a WebSocket or event stream is refused.
DEFAULT_NEW_SESSIONS_PER_IP = 600.0  # a minute, bursts of as many
DEFAULT_CONNECTIONS_PER_SESSION = 32  # open WebSockets and event streams, per worker
DEFAULT_CONNECTIONS_PER_IP = 512

MESSAGE_TIMEOUT = (
    "The app stopped while handling this action (it ran longer than {seconds:g}s, or crashed). "
    "Reload the page to start it again."
)
MESSAGE_ENDED = "The app ended. Reload the page to start it again."
MESSAGE_FAILED = "The app could not handle this action; the error was logged on the server."
MESSAGE_LIMITED = "Too many interactions: slow down."


def page_of(params: Any) -> str | None:
    """The page id a request carries (p=...), or None when it has none or a malformed one."""
    page = params.get("p")
    return page if page and PAGE_ID.fullmatch(page) else None


class Runner(Starlette):
    """Serves htag apps: one process per user and app, interactions over WebSocket or HTTP.

    `obj` (a Tag class, "module.Class", "module:Class" or a module holding `App`) is
    served at "/"; `handle()` serves any app from other routes.
    """

    def __init__(
        self,
        obj: Any = None,
        host: str = "0.0.0.0",
        port: int = 8000,
        debug: bool = False,
        ssl: Any = None,  # htagweb 1.0 had it here, then without effect; kept for its calls
        parano: bool = False,
        http_only: bool = False,
        timeout_interaction: float = 60,
        timeout_inactivity: float = 0,
        *,
        start_method: str | None = None,
        max_processes: int | None = None,
        secret_key: str | bytes | None = None,
        session_cookie: str = "session",
        session_cookie_path: str = "/",
        session_store: SessionStore | None = None,
        allowed_origins: Sequence[str] = (),
        interactions_per_second: float = 200,
        heartbeat: float = 25,
        max_message_bytes: int = MAX_INTERACTION_BYTES,
        max_processes_per_ip: int = 0,
        new_sessions_per_ip: float = DEFAULT_NEW_SESSIONS_PER_IP,
        max_connections_per_session: int = DEFAULT_CONNECTIONS_PER_SESSION,
        max_connections_per_ip: int = DEFAULT_CONNECTIONS_PER_IP,
        dev_reload: bool = False,
    ) -> None:
        self.config = Config(
            debug=debug,
            parano=parano,
            http_only=http_only,
            timeout_interaction=timeout_interaction,
            timeout_inactivity=timeout_inactivity,
            start_method=start_method,
            max_processes=max_processes,
            secret_key=secret_key,
            session_cookie=session_cookie,
            session_store=session_store,
        )
        self.session_store: SessionStore = self.config.session_store  # type: ignore[assignment]
        # Starlette's `host()` is a method: the address to bind keeps other names.
        self.bind_host = host
        self.bind_port = port
        if ssl is not None:
            logger.warning("Runner(ssl=...) has no effect: terminate TLS in uvicorn or a proxy")
        if parano:
            _require_cryptography()
        if max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be > 0")
        # The largest interaction body or WebSocket message a page may send.
        self.max_message_bytes = int(max_message_bytes)
        # Behind a proxy or a NAT many users share one address: the defaults leave room.
        limits = (
            max_processes_per_ip,
            new_sessions_per_ip,
            max_connections_per_session,
            max_connections_per_ip,
        )
        if min(limits) < 0:
            raise ValueError("per-IP and per-session limits must be >= 0 (0: no limit)")
        self.max_processes_per_ip = int(max_processes_per_ip)
        self.new_sessions_per_ip = float(new_sessions_per_ip)  # a minute
        self.connections = guard.OpenConnections(
            int(max_connections_per_session), int(max_connections_per_ip)
        )
        # Development (python -m htagweb --reload): pages reload when this server process
        # is replaced, which they learn from its boot id.
        self.boot_id = secrets.token_hex(8) if dev_reload else ""
        # Sites besides this one whose pages may drive its apps ("https://app.example.com").
        if interactions_per_second < 0:
            raise ValueError("interactions_per_second must be >= 0 (0: no limit)")
        self.interactions_per_second = float(interactions_per_second)
        # Seconds between two signs of life on an idle connection: proxies often cut
        # connections silent for 60 s.
        if heartbeat < 0:
            raise ValueError("heartbeat must be >= 0 (0: none)")
        self.heartbeat = float(heartbeat)
        self.allowed_origins = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)
        self.gateway = Gateway(_one_supervisor(self.config))
        self._refs: dict[Any, AppRef] = {}  # by what the developer passed (kept alive)
        self._home = self._register(obj) if obj is not None else None
        secret = self.config.secret_key or os.environ.get("HTAGWEB_SECRET_KEY")
        cookie = SessionCookie(
            secret or load_or_create_secret(self.config.state_dir),
            name=self.config.session_cookie,
            path=session_cookie_path,
            max_age=int(self.session_store.idle_expiry),
        )
        super().__init__(
            debug=debug,
            routes=[
                Route("/_htagweb/client.js", self._client_js, methods=["GET", "HEAD"]),
                Route("/_htagweb/boot", self._boot, methods=["GET"]),
                Route("/_/{fqn}", self._interact_http, methods=["POST"]),
                Route("/_/{fqn}", self._events, methods=["GET"]),
                WebSocketRoute("/_/{fqn}", self._interact_ws),
            ],
            middleware=[
                Middleware(
                    SessionMiddleware,
                    cookie=cookie,
                    store=self.session_store,
                    on_rotate=self._session_rotated,
                    internal=_is_internal,
                )
            ],
            lifespan=self._lifespan,
        )
        if self._home is not None:
            home = self._home

            async def serve_home(request: Request) -> Response:
                return await self.handle(request, home)

            self.add_route("/", serve_home)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        stopping_event()  # chained in front of the server's signal handlers now, in its loop
        purging = asyncio.ensure_future(self._purge_sessions())
        await self.gateway.start()
        if self._home is not None:
            try:
                await self.gateway.prepare(self._home)
            except AppProcessError as exc:
                logger.error("cannot prepare %s: %s", self._home.fqn, exc)
        yield
        purging.cancel()
        await self.gateway.close()
        self.session_store.close()

    async def _purge_sessions(self) -> None:
        """Delete sessions idle past their expiry (stores without TTLs need this)."""
        interval = max(0.5, min(self.session_store.idle_expiry / 2, 600.0))
        while True:
            try:
                purged = await asyncio.to_thread(self.session_store.purge_expired)
            except Exception:
                logger.exception("purging expired sessions failed")
            else:
                if purged:
                    logger.info("deleted %s expired sessions", purged)
            await asyncio.sleep(interval)

    def _register(self, obj: Any) -> AppRef:
        if isinstance(obj, AppRef):
            return obj
        ref = self._refs.get(obj)
        if ref is None:
            ref = self._refs[obj] = appref.resolve(obj)[0]
        return ref

    # -- pages ---------------------------------------------------------------------

    async def handle(
        self,
        request: Request,
        obj: Any,
        http_only: bool | None = None,
        parano: bool | None = None,
        timeout_interaction: float | None = None,
        timeout_inactivity: float | None = None,
    ) -> Response:
        """Serve a fresh instance of `obj` to this user (a page load)."""
        ref = self._register(obj)
        config = self.config
        http_only = config.http_only if http_only is None else http_only
        parano = config.parano if parano is None else parano
        if parano:
            _require_cryptography()
        interaction_timeout = (
            config.timeout_interaction if timeout_interaction is None else timeout_interaction
        )
        inactivity_timeout = (
            config.timeout_inactivity if timeout_inactivity is None else timeout_inactivity
        )
        root_path = request.scope.get("root_path", "")
        session_id = request.scope[SESSION_SCOPE_KEY]
        args, kargs = url_arguments(str(request.url))
        # htag turns "_name" keyword arguments into HTML attributes of the app's root:
        # from a URL that would let a link inject attributes (onmouseover=...) into the page.
        kargs = {k: v for k, v in kargs.items() if not k.startswith("_")}
        message = {
            "op": "render",
            "init": [list(args), kargs],
            "page": {
                "client_src": f"{root_path}/_htagweb/client.js?v={CLIENT_JS_VERSION}",
                "endpoint": f"{root_path}/_/{ref.fqn}",
                "mode": "http" if http_only else "ws",
                "heartbeat": self.heartbeat,
                "boot": self.boot_id,
            },
            "session": {"id": session_id, "store": self.session_store.describe()},
            "options": {
                "debug": config.debug,
                "parano": parano,
                "timeout_interaction": interaction_timeout,
                "timeout_inactivity": inactivity_timeout,
                "interactions_per_second": self.interactions_per_second,
            },
        }
        try:
            reply = await self.gateway.render(
                ref,
                session_id,
                message,
                _worker_deadline(interaction_timeout),
                self._client_limits(request),
            )
        except ClientLimited as exc:
            return self._error_page(f"{exc}: try again later.", 429)
        except (AppTimeout, AppDied):
            return self._error_page(MESSAGE_TIMEOUT.format(seconds=interaction_timeout), 504)
        except AppProcessError as exc:
            logger.error("cannot serve %s: %s", ref.fqn, exc)
            return self._error_page(str(exc) if config.debug else MESSAGE_ENDED, 500)
        if "html" not in reply:
            return self._error_page(reply.get("error", "") if config.debug else MESSAGE_ENDED, 500)
        await store_session(request)  # a new visitor's session is stored from its first page
        refresh_session_cookie(request)  # an active user's cookie does not expire
        return HTMLResponse(reply["html"])

    async def serve(self, request: Request, obj: Any) -> Response:
        """htagweb 1.0's name for handle(), kept for its users: use handle()."""
        warnings.warn(
            "Runner.serve(request, obj) is deprecated: use handle(request, obj)",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.handle(request, obj)

    def _client_limits(self, request: Request) -> dict[str, Any]:
        """The client address of this page load, with the per-IP limits it is under.

        The address is the one uvicorn gives, which honours its trusted-proxy setting
        (--forwarded-allow-ips): X-Forwarded-For counts only from trusted proxies.
        """
        return {
            "ip": _address_of(request),
            "new_session": bool(request.scope.get(NEW_SCOPE_KEY)),
            "max_processes": self.max_processes_per_ip,
            "new_sessions_per_minute": self.new_sessions_per_ip,
        }

    async def _session_rotated(self, session_id: str) -> None:
        """A session's cookie was rotated: what the old cookie opened is cut off."""
        try:
            await self.gateway.end_session(session_id)
        except AppProcessError as exc:
            logger.error("could not end the apps of a rotated session: %s", exc)

    def _error_page(self, text: str, status: int) -> HTMLResponse:
        body = f"<!DOCTYPE html><title>htagweb</title><p>{html.escape(text)}</p>"
        return HTMLResponse(body, status_code=status)

    async def _boot(self, request: Request) -> Response:
        if not self.boot_id:
            return PlainTextResponse("not a development server", status_code=404)
        return PlainTextResponse(self.boot_id, headers={"Cache-Control": "no-store"})

    async def _client_js(self, request: Request) -> Response:
        immutable = request.query_params.get("v") == CLIENT_JS_VERSION
        cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
        return Response(
            CLIENT_JS,
            media_type="text/javascript",
            headers={"Cache-Control": cache, "ETag": f'"{CLIENT_JS_VERSION}"'},
        )

    # -- interactions ----------------------------------------------------------------

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        """Why an interaction or event stream is refused (status, reason), or None."""
        if not FQN_PATTERN.match(request.path_params["fqn"]):
            return 404, "unknown app"
        refused = guard.origin_refusal(request.headers, self.allowed_origins)
        if refused:
            logger.warning("refused %s %s: %s", request.method, request.url.path, refused)
            return 403, "cross-site requests are refused"
        return None

    async def _interact_http(self, request: Request) -> Response:
        fqn = request.path_params["fqn"]
        refused = self._refusal(request)
        if refused:
            return JSONResponse({"err": refused[1]}, status_code=refused[0])
        limit = self.max_message_bytes
        try:
            parsed = parse_message(await _read_body(request, limit), limit)
        except InvalidInteraction as exc:
            status = 413 if exc.too_large else 400
            return JSONResponse({"err": f"bad interaction: {exc}"}, status_code=status)
        session_id = request.scope[SESSION_SCOPE_KEY]
        await self.gateway.start()
        path = self.gateway.app_socket(session_id, fqn)
        page = page_of(request.query_params)
        if "hello" in parsed:  # parano mode: the page's keys
            message = {"op": "handshake", "page": page, "hello": parsed["hello"]}
        else:
            message = {"op": "interact", "instance": request.query_params.get("i"), "page": page}
            message.update(parsed)
        timeout = self.gateway.timeout_of(path, self.config.timeout_interaction)
        try:
            reply = await self.gateway.call_app(path, message, _worker_deadline(timeout))
        except AppGone:
            return JSONResponse({"reload": True}, status_code=410)
        except (AppTimeout, AppDied) as exc:
            if isinstance(exc, AppTimeout):
                with contextlib.suppress(AppProcessError):
                    await self.gateway.kill(session_id, fqn)
            text = MESSAGE_TIMEOUT.format(seconds=timeout)
            return JSONResponse({"err": text}, status_code=504)
        except AppProcessError as exc:
            logger.error("interaction with %s failed: %s", fqn, exc)
            return JSONResponse({"err": MESSAGE_ENDED}, status_code=503)
        if reply.get("limited"):
            return JSONResponse({"err": MESSAGE_LIMITED}, status_code=429)
        if "error" in reply:
            logger.error("interaction with %s failed: %s", fqn, reply["error"])
            text = reply["error"] if self.config.debug else MESSAGE_FAILED
            return JSONResponse({"err": text}, status_code=500)
        if reply.get("rekey"):
            return JSONResponse({"rekey": True}, status_code=409)
        down = _to_browser(reply)
        if down is None or down.get("reload"):  # no answer: not a live page
            return JSONResponse({"reload": True}, status_code=410)
        return Response(json.dumps(down), media_type="application/json")

    async def _interact_ws(self, websocket: WebSocket) -> None:
        fqn = websocket.path_params["fqn"]
        refused = guard.origin_refusal(websocket.headers, self.allowed_origins)
        session_id = websocket.scope[SESSION_SCOPE_KEY]
        address = _address_of(websocket)
        refused = refused or self.connections.open(session_id, address)
        if refused:  # closing before accepting answers the handshake with 403
            logger.warning("refused a WebSocket: %s", refused)
            await websocket.close(WS_CLOSE_POLICY)
            return
        try:
            await self._relay_websocket(websocket, fqn, session_id)
        finally:
            self.connections.close(session_id, address)

    async def _relay_websocket(self, websocket: WebSocket, fqn: str, session_id: str) -> None:
        await self.gateway.start()
        try:
            if not FQN_PATTERN.match(fqn):
                raise OSError("unknown app")
            reader, writer = await asyncio.open_unix_connection(
                self.gateway.app_socket(session_id, fqn)
            )
        except OSError:
            await websocket.accept()
            await websocket.send_text(json.dumps({"reload": True}))
            await websocket.close(WS_CLOSE_APP_GONE, "no app for this page")
            return
        await websocket.accept()
        bridge = _SocketBridge(
            websocket, reader, writer, self.config.timeout_interaction, self.max_message_bytes
        )
        params = websocket.query_params
        attach = {
            "op": "attach",
            "instance": params.get("i"),
            "page": page_of(params),
            "refresh": params.get("r") == "1",
        }
        try:
            await bridge.run(attach, sealed=params.get("s") == "1")
        finally:
            writer.close()
        if bridge.timed_out:
            with contextlib.suppress(AppProcessError):
                await self.gateway.kill(session_id, fqn)

    async def _events(self, request: Request) -> Response:
        """tag.update() pushes for a page without a WebSocket, as Server-Sent Events."""
        fqn = request.path_params["fqn"]
        refused = self._refusal(request)
        if refused:
            return PlainTextResponse(refused[1], status_code=refused[0])
        session_id = request.scope[SESSION_SCOPE_KEY]
        address = _address_of(request)
        await self.gateway.start()
        too_many = self.connections.open(session_id, address)
        if too_many:
            logger.warning("refused an event stream: %s", too_many)
            return PlainTextResponse(too_many, status_code=429)
        params = request.query_params
        proof = params.get("e")  # parano: that the page holding the keys opened this stream
        attach = {
            "op": "attach",
            "instance": params.get("i"),
            "page": page_of(params),
            "refresh": params.get("r") == "1",
            "proof": proof if proof and len(proof) <= MAX_STREAM_PROOF else None,
            "rid": 0,
        }
        return _EventStreamResponse(
            self._event_stream(self.gateway.app_socket(session_id, fqn), attach),
            on_close=lambda: self.connections.close(session_id, address),
        )

    async def _event_stream(self, path: str, attach: dict[str, Any]) -> AsyncIterator[str]:
        # The connection is opened here, not before the response starts, so that it is
        # closed by this generator's end whatever ends the response.
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError:
            yield _event({"reload": True})
            return
        writer.write(encode_frame(attach))
        stopping = asyncio.ensure_future(stopping_event().wait())
        next_frame = asyncio.ensure_future(read_frame(reader))
        heartbeat = self.heartbeat or None
        try:
            yield ": connected\n\n"
            while True:
                await asyncio.wait(
                    {next_frame, stopping}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping.done():
                    return  # the page reconnects to whichever server comes next
                if not next_frame.done():
                    # An event, not a comment: the page sees it, and knows the stream lives.
                    yield "event: ping\ndata: \n\n"
                    continue
                try:
                    message = next_frame.result()
                except (FrameError, ConnectionError):
                    message = None
                if message is None:
                    yield "event: ended\ndata: {}\n\n"
                    return
                down = _to_browser(message)
                if down is not None:
                    yield _event(down)
                    if down.get("reload"):
                        return  # not attached: the page loads again
                next_frame = asyncio.ensure_future(read_frame(reader))
        finally:
            stopping.cancel()
            next_frame.cancel()
            writer.close()

    # -- running -------------------------------------------------------------------

    def run(
        self,
        host: str | None = None,
        port: int | None = None,
        workers: int = 1,
        openBrowser: bool = False,
        **uvicorn_options: Any,
    ) -> None:
        """Serve with uvicorn; HTAGWEB_HOST / HTAGWEB_PORT override the constructor's values.

        `run(True)`, htagweb 1.0's `run(openBrowser)`, opens a browser too.
        """
        import uvicorn

        if isinstance(host, bool):
            host, openBrowser = None, host
        host = host or os.environ.get("HTAGWEB_HOST") or self.bind_host
        port = int(port or os.environ.get("HTAGWEB_PORT") or self.bind_port)
        if openBrowser:
            import webbrowser

            webbrowser.open_new_tab(f"http://localhost:{port}")
        if workers > 1:
            from .prefork import serve_prefork

            serve_prefork(self, host, port, workers, uvicorn_options)
        else:
            uvicorn.run(self, host=host, port=port, **uvicorn_options)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise InvalidInteraction(f"over {limit} bytes", too_large=True)
    return bytes(body)


# The supervisor settings of this process's Runners: a server has one supervisor, so a
# Runner asking for other ones would silently get the first one's.
_supervisor_settings: dict[str, Any] | None = None


def _one_supervisor(config: Config) -> dict[str, Any]:
    """The supervisor settings of `config`: ValueError if another Runner of this process
    asked for different ones."""
    global _supervisor_settings
    settings = {"start_method": config.start_method, "max_processes": config.max_processes}
    if _supervisor_settings is None:
        _supervisor_settings = settings
    elif settings != _supervisor_settings:
        raise ValueError(
            f"this server already has a Runner with {_supervisor_settings}, and a server has "
            "one supervisor: give every Runner the same start_method and max_processes, "
            f"not {settings}"
        )
    return settings


def _is_internal(scope: Scope) -> bool:
    """Whether a request is for one of htagweb's own endpoints (below the ASGI root_path)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.startswith(INTERNAL_PATHS)


def _address_of(connection: Request | WebSocket) -> str:
    """The client's address as per-IP limits count it (see limits.address_group)."""
    return limits.address_group(connection.client.host if connection.client else "")


class _EventStreamResponse(StreamingResponse):
    """Server-Sent Events; `on_close` runs once the response ends, however it ends."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},  # nginx: unbuffered
        )
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "parano mode needs the cryptography package: pip install 'htagweb[parano]'"
        ) from None


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _to_browser(message: dict[str, Any]) -> dict[str, Any] | None:
    """What the page receives for a frame its app process pushed or answered."""
    if message.get("reload"):
        return {"reload": True}
    if message.get("rekey"):  # parano: the page must agree on new keys
        return {"rekey": True}
    if "error" in message:  # logged by the app process
        return {"err": MESSAGE_FAILED}
    if not ({"hello", "sealed", "actions"} & message.keys()):
        return None  # {"ok": true}, the answer to a plain attach
    down: dict[str, Any] = {}  # empty actions are an answer too: the click changed nothing
    if "hello" in message:  # parano: the app process's public key
        down["hello"] = message["hello"]
    if "sealed" in message:
        down.update(message["sealed"])
    elif "actions" in message:
        down.update(message["actions"])
    return down


def _worker_deadline(timeout_interaction: float) -> float | None:
    return timeout_interaction + DEADLINE_GRACE if timeout_interaction > 0 else None


class _SocketBridge:
    """Carries one page's WebSocket to its app process and back.

    Interactions go up as framed requests; answers and tag.update() pushes come down
    as htag actions. A watchdog ends the process if an answer is overdue (the app's own
    deadline should have fired first), and the page is told why when the process ends.
    """

    def __init__(
        self,
        websocket: WebSocket,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout_interaction: float,
        max_message_bytes: int,
    ) -> None:
        self.websocket = websocket
        self.max_message_bytes = max_message_bytes
        self.reader = reader
        self.writer = writer
        self.timeout_interaction = timeout_interaction
        # Unanswered interactions: when each was sent, and its number (seq) if it has one.
        self.sent_at: collections.deque[tuple[float, Any]] = collections.deque()
        self.sent = asyncio.Event()
        self.timed_out = False
        self.browser_left = False

    async def run(self, attach: dict[str, Any], sealed: bool) -> None:
        """Bridge until either side leaves; `sealed`: parano, the page's keys come first."""
        if not await self._attach(attach, sealed):
            return
        tasks = [
            asyncio.ensure_future(self._downstream()),
            asyncio.ensure_future(self._upstream()),
            asyncio.ensure_future(self._watchdog()),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, ConnectionError):
                await task
        if self.browser_left:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, ConnectionError):
            if self.sent_at or self.timed_out:
                text = MESSAGE_TIMEOUT.format(seconds=self.timeout_interaction)
                await self.websocket.send_text(json.dumps({"err": text}))
            await self.websocket.close(WS_CLOSE_APP_GONE, "the app ended")

    async def _attach(self, attach: dict[str, Any], sealed: bool) -> bool:
        """The attach goes up (parano: with the page's public key, its first message) and
        its answer comes back, before anything else.

        False, and the socket closed, if the page left or sent something else first, or
        if the app process did not attach the socket: no keys were agreed (a bad key, or a
        page id whose keys another page holds), or "reload" (no live instance; parano: a
        socket without a key exchange, which must not take the page's pushes). With
        "reload" the page loads a page of its own.
        """
        if sealed:
            hello = None
            with contextlib.suppress(WebSocketDisconnect, InvalidInteraction, KeyError):
                text = await self.websocket.receive_text()  # KeyError: a binary frame
                hello = parse_message(text, self.max_message_bytes).get("hello")
            if hello is None:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                    await self.websocket.close(WS_CLOSE_POLICY, "a key exchange was expected")
                return False
            attach = {**attach, "hello": hello}
        self.writer.write(encode_frame({**attach, "rid": 0}))
        try:
            reply = await read_frame(self.reader)
        except (FrameError, ConnectionError):
            reply = None
        if not isinstance(reply, dict):
            return True  # the app ended: the bridge finds out, and tells the page
        if "timeout_interaction" in reply:
            self.timeout_interaction = float(reply["timeout_interaction"])
        down = _to_browser(reply)
        attached = "hello" in reply if sealed else not reply.get("reload")
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            if down is not None:
                await self.websocket.send_text(json.dumps(down))
            if attached:
                return True
            reason = "no keys were agreed" if sealed else "not attached"
            await self.websocket.close(WS_CLOSE_POLICY, reason)
        return False

    async def _upstream(self) -> None:
        rid = 0
        malformed = 0
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.browser_left = True
                return
            text = message.get("text")
            if text == "ping":  # the page's heartbeat
                await self.websocket.send_text("pong")
                continue
            try:
                if text is None:
                    raise InvalidInteraction("interactions are text frames")
                parsed = parse_message(text, self.max_message_bytes)
                if "hello" in parsed:
                    raise InvalidInteraction("keys are agreed once, when the socket opens")
            except InvalidInteraction as exc:
                malformed += 1
                if exc.too_large:
                    await self._close_for(WS_CLOSE_TOO_BIG, "message too big")
                    return
                if malformed > MAX_MALFORMED_MESSAGES:
                    await self._close_for(WS_CLOSE_POLICY, "too many malformed messages")
                    return
                await self.websocket.send_text(json.dumps({"err": f"bad interaction: {exc}"}))
                continue
            rid += 1
            self.sent_at.append((time.monotonic(), parsed.get("payload", {}).get("seq")))
            self.sent.set()
            self.writer.write(encode_frame({"op": "interact", **parsed, "rid": rid}))
            await self.writer.drain()

    async def _close_for(self, code: int, reason: str) -> None:
        """Close the page's socket because of what it sent (it is not told anything else)."""
        logger.warning("closed a WebSocket: %s", reason)
        await self.websocket.close(code, reason)
        self.browser_left = True

    async def _downstream(self) -> None:
        with contextlib.suppress(FrameError, ConnectionError):
            while (message := await read_frame(self.reader)) is not None:
                if "timeout_interaction" in message:  # the app process's own deadline
                    self.timeout_interaction = float(message["timeout_interaction"])
                seq = None
                if message.get("rid") and self.sent_at:
                    seq = self.sent_at.popleft()[1]
                if message.get("limited"):
                    await self.websocket.send_text(json.dumps({"err": MESSAGE_LIMITED}))
                    await self.websocket.close(WS_CLOSE_POLICY, "too many interactions")
                    self.browser_left = True  # closed here: nothing more to tell it
                    return
                down = _to_browser(message)
                if down is not None:
                    if seq is not None and "seq" not in down and "c" not in down:
                        down["seq"] = seq  # an error answer: the page stops waiting for it
                    await self.websocket.send_text(json.dumps(down))

    async def _watchdog(self) -> None:
        while True:
            deadline = _worker_deadline(self.timeout_interaction)
            if not self.sent_at or deadline is None:
                self.sent.clear()
                await self.sent.wait()
                continue
            overdue = time.monotonic() - self.sent_at[0][0] - deadline
            if overdue >= 0:
                self.timed_out = True
                return
            await asyncio.sleep(-overdue)


AppServer = Runner  # the same class under htagweb 1.0's other name
WebServerWS = Runner  # first render over HTTP, interactions over WebSocket


class WebServer(Runner):
    """A Runner whose interactions go over HTTP (http_only=True)."""

    def __init__(
        self,
        obj: Any = None,
        host: str = "0.0.0.0",
        port: int = 8000,
        debug: bool = False,
        parano: bool = False,
        http_only: bool = True,
        timeout_interaction: float = 60,
        timeout_inactivity: float = 0,
        **options: Any,
    ) -> None:
        super().__init__(
            obj,
            host,
            port,
            debug,
            parano=parano,
            http_only=http_only,
            timeout_interaction=timeout_interaction,
            timeout_inactivity=timeout_inactivity,
            **options,
        )
