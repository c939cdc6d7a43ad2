"""The Runner the development server serves, built in the serving process.

With --reload, uvicorn imports `create` again in a fresh process after every change;
the settings travel in environment variables set by the command line.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import runtime
from ..web.pages import BOOT_PATH, boot_handler, error_page
from ..web.runner import Runner
from .crosssite import SameSiteOnly
from .folder import OPEN_PATH, ROOT_VARIABLE, FolderBrowser, served_root
from .targets import DevError, OutsideFolder, load_app, split_target

logger = logging.getLogger(__name__)

TARGET_VARIABLE = "HTAGWEB_DEV_TARGET"
OPTIONS_VARIABLE = "HTAGWEB_DEV_OPTIONS"  # JSON: debug, parano, http_only, reload, host


def settings() -> tuple[Path, str, dict[str, Any]]:
    """The folder, the target and the options the command line was given."""
    options = json.loads(os.environ.get(OPTIONS_VARIABLE) or "{}")
    return served_root(), os.environ.get(TARGET_VARIABLE, ""), options


def build(root: Path, target: str, options: dict[str, Any]) -> Runner:
    """The Runner for a target ("" : index.py's App, or the folder browser); DevError."""
    debug = bool(options.get("debug"))

    def runner_for(obj: Any) -> Runner:
        return Runner(
            obj,
            debug=debug,
            parano=bool(options.get("parano")),
            http_only=bool(options.get("http_only")),
            dev_reload=bool(options.get("reload")),
        )

    if target:
        return runner_for(load_app(root, *split_target(target, root), debug=debug))
    if (root / "index.py").is_file():
        return runner_for(load_app(root, "index.py", "App", debug=debug))
    runner = runner_for(FolderBrowser)

    async def open_app(request: Request) -> Response:
        relative = request.query_params.get("path", "")
        name = request.query_params.get("name", "App")
        try:
            ref = load_app(root, relative, name, debug=debug, only_listed=True)
        except DevError as exc:
            return error_page(str(exc), 403 if isinstance(exc, OutsideFolder) else 404)
        return await runner.handle(request, ref)

    runner.add_route(OPEN_PATH, open_app)
    return runner


def guard(app: Starlette, host: str) -> None:
    """Only requests naming this machine (or the address served), and not sent by
    another site's page, reach the app.

    A page of another site can make the browser send requests here (opening a URL runs
    a file of the folder), and with DNS rebinding read the answers: the Host header
    tells the rebinding apart, Sec-Fetch-Site, Origin and Referer the other site's page.
    """
    hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
    if host in ("0.0.0.0", "::"):
        hosts = ["*"]  # served to the network on purpose
    elif host not in hosts:
        hosts.append(host)
    app.add_middleware(SameSiteOnly)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)  # outermost: added last


def create() -> Starlette:
    """uvicorn's factory: the Runner, or a page showing why there is none (after a reload)."""
    root, target, options = settings()
    if options.get("reload"):
        # One supervisor per serving process: a reload starts the apps from fresh templates.
        runtime.set_master_pid(os.getpid())
    try:
        app: Starlette = build(root, target, options)
    except DevError as exc:
        logger.error("htagweb: %s", exc)
        app = _broken_app(f"{exc} (fix it and save: the server reloads)")
    guard(app, str(options.get("host", "127.0.0.1")))
    return app


def _broken_app(message: str) -> Starlette:
    """Until the next save: open pages reload into the error, which reloads itself."""
    boot = boot_handler(secrets.token_hex(8))  # not the one open pages know: they reload

    async def explain(request: Request) -> Response:
        return error_page(message, 500, refresh=True)

    return Starlette(routes=[Route(BOOT_PATH, boot), Route("/{path:path}", explain)])


__all__ = ["ROOT_VARIABLE", "build", "create"]
