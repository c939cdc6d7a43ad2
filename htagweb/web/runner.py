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
import dataclasses
import logging
import os
import secrets
import warnings
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Scope
from starlette.websockets import WebSocket

from .. import appref
from ..appref import FQN_PATTERN, AppRef
from ..config import Config, one_supervisor
from ..machine import raise_open_files_limit
from ..sessions import SessionStore
from ..sessions.cookie import SessionCookie, SessionMiddleware, load_or_create_secret
from . import assets, events, guard, http
from . import websocket as websocket_transport
from .door import AppDoor, AppProcessError
from .gateway import Gateway
from .page_load import serve_page
from .pages import BOOT_PATH, boot_handler
from .shutdown import stopping_event

logger = logging.getLogger(__name__)

INTERNAL_PATHS = ("/_/", "/_htagweb/")  # htagweb's own endpoints (never read request.session)
# Config's fields that Runner takes as keyword options (the others are its positional ones).
RUNNER_OPTIONS = frozenset(f.name for f in dataclasses.fields(Config)) - {
    "debug",
    "parano",
    "http_only",
    "timeout_interaction",
    "timeout_inactivity",
}


class Runner(Starlette):
    """Serves htag apps: one process per user and app, interactions over WebSocket or HTTP.

    `obj` (a Tag class, "module.Class", "module:Class" or a module holding `App`) is
    served at "/"; `handle()` serves any app from other routes. Options (see Config, and
    the README's "Limits and tuning"):

    - parano: interactions sealed between the browser and the app process
    - http_only: interactions over HTTP (pushes over Server-Sent Events), no WebSocket
    - timeout_interaction: seconds an interaction may run before its process is ended
    - timeout_inactivity: seconds without use before a user's process ends (0: never)
    - start_method, max_processes, memory_reserve: how app processes start, how many may
      live, and the memory kept free (past it each new one replaces the least recently used)
    - merge_memory: identical memory pages of app processes are merged (Linux KSM; see
      the README for what it costs)
    - secret_key, session_cookie, session_cookie_path, session_store: sessions
    - state_dir: where the default session store and secret key are kept
    - allowed_origins: sites besides this one whose pages may drive its apps
    - interactions_per_second, max_message_bytes: per page
    - heartbeat: seconds between signs of life on an idle connection (proxies often cut
      connections silent for 60 s)
    - max_processes_per_ip, new_sessions_per_ip (a minute), max_connections_per_session,
      max_connections_per_ip (per worker): per client address; behind a proxy or a NAT
      many users share one address, and the defaults leave room for them
    - dev_reload: pages reload when this server process is replaced (python -m htagweb)
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
        **options: Any,
    ) -> None:
        unknown = set(options) - RUNNER_OPTIONS
        if unknown:
            raise TypeError(f"Runner() got unknown options: {', '.join(sorted(unknown))}")
        self.config = Config(
            debug=debug,
            parano=parano,
            http_only=http_only,
            timeout_interaction=timeout_interaction,
            timeout_inactivity=timeout_inactivity,
            **options,
        )
        if ssl is not None:
            logger.warning("Runner(ssl=...) has no effect: terminate TLS in uvicorn or a proxy")
        if parano:
            _require_cryptography()
        # Starlette's `host()` is a method: the address to bind keeps other names.
        self.bind_host, self.bind_port = host, port
        self.connections = guard.OpenConnections(
            self.config.max_connections_per_session, self.config.max_connections_per_ip
        )
        # Development: pages learn from this id that the server process was replaced.
        self.boot_id = secrets.token_hex(8) if self.config.dev_reload else ""
        self.gateway = Gateway(one_supervisor(self.config), self.config.timeout_interaction)
        self.door: AppDoor = self.gateway
        self._refs: dict[Any, AppRef] = {}  # by what the developer passed (kept alive)
        self._home = self._register(obj) if obj is not None else None
        super().__init__(
            debug=debug,
            routes=self._internal_routes(),
            middleware=[self._session_middleware()],
            lifespan=self._lifespan,
        )
        if self._home is not None:
            home = self._home

            async def serve_home(request: Request) -> Response:
                return await self.handle(request, home)

            self.add_route("/", serve_home)

    def _internal_routes(self) -> list[BaseRoute]:
        return [
            *assets.routes(),
            Route(BOOT_PATH, boot_handler(self.boot_id), methods=["GET"]),
            Route("/_/{fqn}", self._interact_http, methods=["POST"]),
            Route("/_/{fqn}", self._events, methods=["GET"]),
            WebSocketRoute("/_/{fqn}", self._interact_ws),
        ]

    def _session_middleware(self) -> Middleware:
        config = self.config
        cookie = SessionCookie(
            config.secret_key or load_or_create_secret(config.state_dir),
            name=config.session_cookie,
            path=config.session_cookie_path,
            max_age=int(config.store.idle_expiry),
        )
        return Middleware(
            SessionMiddleware,
            cookie=cookie,
            store=config.store,
            on_rotate=self._session_rotated,
            internal=_is_internal,
        )

    @property
    def session_store(self) -> SessionStore:
        return self.config.store

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        stopping_event()  # chained in front of the server's signal handlers now, in its loop
        raise_open_files_limit()  # a connection to each app process this worker reaches
        purging = asyncio.ensure_future(purge_expired_sessions(self.config.store))
        await self.gateway.start()
        if self._home is not None:
            try:
                await self.gateway.prepare(self._home)
            except AppProcessError as exc:
                logger.error("cannot prepare %s: %s", self._home.fqn, exc)
        yield
        purging.cancel()
        await self.gateway.close()
        self.config.store.close()

    def _register(self, obj: Any) -> AppRef:
        if isinstance(obj, AppRef):
            return obj
        ref = self._refs.get(obj)
        if ref is None:
            ref = self._refs[obj] = appref.resolve(obj)[0]
        return ref

    # -- pages ---------------------------------------------------------------------------

    async def handle(
        self,
        request: Request,
        obj: Any,
        http_only: bool | None = None,
        parano: bool | None = None,
        timeout_interaction: float | None = None,
        timeout_inactivity: float | None = None,
    ) -> Response:
        """Serve a fresh instance of `obj` to this user (a page load); the options given
        here override the Runner's for this route."""
        options = self.config.app_options(parano, timeout_interaction, timeout_inactivity)
        if options["parano"]:
            _require_cryptography()
        http_only = self.config.http_only if http_only is None else http_only
        return await serve_page(self, request, self._register(obj), options, http_only)

    async def serve(self, request: Request, obj: Any) -> Response:
        """htagweb 1.0's name for handle(), kept for its users: use handle()."""
        warnings.warn(
            "Runner.serve(request, obj) is deprecated: use handle(request, obj)",
            DeprecationWarning,
            stacklevel=2,
        )
        return await self.handle(request, obj)

    async def _session_rotated(self, session_id: str) -> None:
        """A session's cookie was rotated: what the old cookie opened is cut off."""
        try:
            await self.door.end_session(session_id)
        except AppProcessError as exc:
            logger.error("could not end the apps of a rotated session: %s", exc)

    # -- interactions ----------------------------------------------------------------

    async def _interact_http(self, request: Request) -> Response:
        return await http.interact(self, request)

    async def _events(self, request: Request) -> Response:
        return await events.serve(self, request)

    async def _interact_ws(self, websocket: WebSocket) -> None:
        await websocket_transport.serve(self, websocket)

    @property
    def heartbeat(self) -> float:
        return self.config.heartbeat

    @property
    def max_message_bytes(self) -> int:
        """The largest interaction body or WebSocket message a page may send."""
        return self.config.max_message_bytes

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(self.config.allowed_origins)

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


async def purge_expired_sessions(store: SessionStore) -> None:
    """Delete sessions idle past their expiry, for ever (stores without TTLs need this)."""
    interval = max(0.5, min(store.idle_expiry / 2, 600.0))
    while True:
        try:
            purged = await asyncio.to_thread(store.purge_expired)
        except Exception:
            logger.exception("purging expired sessions failed")
        else:
            if purged:
                logger.info("deleted %s expired sessions", purged)
        await asyncio.sleep(interval)


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
