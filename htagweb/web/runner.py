"""The web side: a Starlette app that serves htag apps and forwards their interactions.

    GET  /                   the app given to the constructor (or any route using handle())
    POST /_/{fqn}            one interaction over HTTP
    WS   /_/{fqn}            interactions and tag.update() pushes over a WebSocket
    GET  /_/{fqn}            tag.update() pushes as Server-Sent Events (HTTP pages)
    GET  /_htagweb/client.js the browser client (and parano.js, for parano pages: assets.py)

Query parameters of the last three: i, the app instance the page shows; p, the page's
own random id; r=1 when the page reconnects (it then gets the current tree).

Each transport has its module: http.py (POST), websocket.py (WS), events.py (SSE); what
they tell the browser for an app process's answer is in replies.py.

Workers hold no user state: every request finds the user's app process through the
session id and a hash (see htagweb.runtime), whichever worker it reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import secrets
import warnings
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Route, WebSocketRoute
from starlette.types import Scope
from starlette.websockets import WebSocket

from .. import appref
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
from ..wire.protocol import MAX_INTERACTION_BYTES
from . import assets, events, guard, http
from . import websocket as websocket_transport
from .gateway import AppDied, AppProcessError, AppTimeout, ClientLimited, Gateway
from .replies import MESSAGE_ENDED, MESSAGE_TIMEOUT, address_of, worker_deadline
from .shutdown import stopping_event

logger = logging.getLogger(__name__)

INTERNAL_PATHS = ("/_/", "/_htagweb/")  # htagweb's own endpoints (never read request.session)
# Per client address, defaults that a crowd behind one proxy does not reach: past them a
# page load gets 429, a WebSocket or event stream is refused.
DEFAULT_NEW_SESSIONS_PER_IP = 600.0  # a minute, bursts of as many
DEFAULT_CONNECTIONS_PER_SESSION = 32  # open WebSockets and event streams, per worker
DEFAULT_CONNECTIONS_PER_IP = 512

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
                *assets.routes(),
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
                "client_src": assets.asset_url(root_path, "client.js"),
                "parano_src": assets.asset_url(root_path, "parano.js"),
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
                worker_deadline(interaction_timeout),
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
            "ip": address_of(request),
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

    # -- interactions ----------------------------------------------------------------

    async def _interact_http(self, request: Request) -> Response:
        return await http.interact(self, request)

    async def _events(self, request: Request) -> Response:
        return await events.serve(self, request)

    async def _interact_ws(self, websocket: WebSocket) -> None:
        await websocket_transport.serve(self, websocket)

    def refusal(self, request: Request) -> tuple[int, str] | None:
        """Why an interaction or event stream is refused (status, reason), or None."""
        if not FQN_PATTERN.match(request.path_params["fqn"]):
            return 404, "unknown app"
        refused = guard.origin_refusal(request.headers, self.allowed_origins)
        if refused:
            logger.warning("refused %s %s: %s", request.method, request.url.path, refused)
            return 403, "cross-site requests are refused"
        return None

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


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "parano mode needs the cryptography package: pip install 'htagweb[parano]'"
        ) from None


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
