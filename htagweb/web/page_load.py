"""A page load: a fresh instance of an app for this user, rendered by its app process."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..appref import AppRef
from ..htag_internals import url_arguments
from ..sessions.cookie import (
    NEW_SCOPE_KEY,
    SESSION_SCOPE_KEY,
    refresh_session_cookie,
    store_session,
)
from ..wire.messages import AppOptions, ClientLimits, PageRendered, PageSettings, RenderRequest
from .assets import asset_url
from .door import AppDied, AppProcessError, ClientLimited
from .pages import error_page
from .replies import MESSAGE_ENDED, MESSAGE_TIMEOUT, address_of

if TYPE_CHECKING:
    from .runner import Runner

logger = logging.getLogger(__name__)


async def serve_page(
    runner: Runner, request: Request, ref: AppRef, options: AppOptions, http_only: bool
) -> Response:
    """The page of a fresh instance of `ref`, or an error page saying why there is none."""
    session_id = request.scope[SESSION_SCOPE_KEY]
    args, kargs = url_arguments(str(request.url))
    # htag turns "_name" keyword arguments into HTML attributes of the app's root:
    # from a URL that would let a link inject attributes (onmouseover=...) into the page.
    kargs = {k: v for k, v in kargs.items() if not k.startswith("_")}
    render: RenderRequest = {
        "op": "render",
        "init": [list(args), kargs],
        "page": page_settings(runner, request, ref, http_only),
        "session": {"id": session_id, "store": runner.config.store.describe()},
        "options": options,
    }
    debug = runner.config.debug
    try:
        reply = await runner.door.render(ref, session_id, render, client_limits(runner, request))
    except ClientLimited as exc:
        return error_page(f"{exc}: try again later.", 429)
    except AppDied:
        text = MESSAGE_TIMEOUT.format(seconds=options["timeout_interaction"])
        return error_page(text, 504)
    except AppProcessError as exc:
        logger.error("cannot serve %s: %s", ref.fqn, exc)
        return error_page(str(exc) if debug else MESSAGE_ENDED, 500)
    if reply.get("kind") != "page" or not isinstance(reply.get("html"), str):
        return error_page(str(reply.get("error", "")) if debug else MESSAGE_ENDED, 500)
    await store_session(request)  # a new visitor's session is stored from its first page
    refresh_session_cookie(request)  # an active user's cookie does not expire
    return HTMLResponse(cast(PageRendered, reply)["html"])


def page_settings(runner: Runner, request: Request, ref: AppRef, http_only: bool) -> PageSettings:
    """What the page's client script is told."""
    root_path = request.scope.get("root_path", "")
    return {
        "client_src": asset_url(root_path, "client.js"),
        "parano_src": asset_url(root_path, "parano.js"),
        "endpoint": f"{root_path}/_/{ref.fqn}",
        "mode": "http" if http_only else "ws",
        "heartbeat": runner.config.heartbeat,
        "boot": runner.boot_id,
    }


def client_limits(runner: Runner, request: Request) -> ClientLimits:
    """The client address of this page load, with the per-address limits it is under.

    The address is the one uvicorn gives, which honours its trusted-proxy setting
    (--forwarded-allow-ips): X-Forwarded-For counts only from trusted proxies.
    """
    return {
        "ip": address_of(request),
        "new_session": bool(request.scope.get(NEW_SCOPE_KEY)),
        "max_processes": runner.config.max_processes_per_ip,
        "new_sessions_per_minute": runner.config.new_sessions_per_ip,
    }
