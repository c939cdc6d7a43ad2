"""Interactions over HTTP: POST /_/{fqn}, one interaction (or a parano key exchange) a
request, answered with htag's actions."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..sessions.cookie import SESSION_SCOPE_KEY
from ..wire.protocol import InvalidInteraction, parse_message
from .gateway import AppDied, AppGone, AppProcessError, AppTimeout
from .replies import (
    MESSAGE_ENDED,
    MESSAGE_FAILED,
    MESSAGE_LIMITED,
    MESSAGE_TIMEOUT,
    page_of,
    read_body,
    to_browser,
    worker_deadline,
)

if TYPE_CHECKING:
    from .runner import Runner

logger = logging.getLogger(__name__)


async def interact(runner: Runner, request: Request) -> Response:
    fqn = request.path_params["fqn"]
    refused = runner.refusal(request)
    if refused:
        return JSONResponse({"err": refused[1]}, status_code=refused[0])
    limit = runner.max_message_bytes
    try:
        parsed = parse_message(await read_body(request, limit), limit)
    except InvalidInteraction as exc:
        status = 413 if exc.too_large else 400
        return JSONResponse({"err": f"bad interaction: {exc}"}, status_code=status)
    session_id = request.scope[SESSION_SCOPE_KEY]
    await runner.gateway.start()
    path = runner.gateway.app_socket(session_id, fqn)
    page = page_of(request.query_params)
    if "hello" in parsed:  # parano mode: the page's keys
        message = {"op": "handshake", "page": page, "hello": parsed["hello"]}
    else:
        message = {"op": "interact", "instance": request.query_params.get("i"), "page": page}
        message.update(parsed)
    timeout = runner.gateway.timeout_of(path, runner.config.timeout_interaction)
    try:
        reply = await runner.gateway.call_app(path, message, worker_deadline(timeout))
    except AppGone:
        return JSONResponse({"reload": True}, status_code=410)
    except (AppTimeout, AppDied) as exc:
        if isinstance(exc, AppTimeout):
            with contextlib.suppress(AppProcessError):
                await runner.gateway.kill(session_id, fqn)
        text = MESSAGE_TIMEOUT.format(seconds=timeout)
        return JSONResponse({"err": text}, status_code=504)
    except AppProcessError as exc:
        logger.error("interaction with %s failed: %s", fqn, exc)
        return JSONResponse({"err": MESSAGE_ENDED}, status_code=503)
    if reply.get("limited"):
        return JSONResponse({"err": MESSAGE_LIMITED}, status_code=429)
    if "error" in reply:
        logger.error("interaction with %s failed: %s", fqn, reply["error"])
        text = reply["error"] if runner.config.debug else MESSAGE_FAILED
        return JSONResponse({"err": text}, status_code=500)
    if reply.get("rekey"):
        return JSONResponse({"rekey": True}, status_code=409)
    down = to_browser(reply)
    if down is None or down.get("reload"):  # no answer: not a live page
        return JSONResponse({"reload": True}, status_code=410)
    return Response(json.dumps(down), media_type="application/json")

