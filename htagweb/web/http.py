"""Interactions over HTTP: POST /_/{fqn}, one interaction (or a parano key exchange) a
request, answered with htag's actions."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..sessions.cookie import SESSION_SCOPE_KEY
from ..wire.messages import AppReply, HandshakeRequest, InteractRequest
from ..wire.protocol import InvalidInteraction, interact_request, parse_message
from .door import AppDied, AppGone, AppProcessError
from .replies import (
    MESSAGE_ENDED,
    MESSAGE_FAILED,
    MESSAGE_LIMITED,
    MESSAGE_TIMEOUT,
    page_of,
    read_body,
    to_browser,
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
    page = page_of(request.query_params)
    message: InteractRequest | HandshakeRequest
    if "hello" in parsed:  # parano mode: the page's keys
        message = {"op": "handshake", "page": page, "hello": parsed["hello"]}
    else:
        message = interact_request(parsed, request.query_params.get("i"), page)
    try:
        reply = await runner.door.interact(session_id, fqn, message)
    except AppGone:
        return JSONResponse({"reload": True}, status_code=410)
    except AppDied:  # its deadline (it was ended then), or a crash
        text = MESSAGE_TIMEOUT.format(seconds=runner.door.timeout_of(session_id, fqn))
        return JSONResponse({"err": text}, status_code=504)
    except AppProcessError as exc:
        logger.error("interaction with %s failed: %s", fqn, exc)
        return JSONResponse({"err": MESSAGE_ENDED}, status_code=503)
    return _response(runner, fqn, reply)


def _response(runner: Runner, fqn: str, reply: AppReply) -> Response:
    kind = reply.get("kind")
    if kind == "limited":
        return JSONResponse({"err": MESSAGE_LIMITED}, status_code=429)
    if kind == "error":
        error = reply.get("error", "")
        logger.error("interaction with %s failed: %s", fqn, error)
        return JSONResponse({"err": error if runner.config.debug else MESSAGE_FAILED}, 500)
    if kind == "rekey":
        return JSONResponse({"rekey": True}, status_code=409)
    down = to_browser(reply)
    if down is None or down.get("reload"):  # no answer: not a live page
        return JSONResponse({"reload": True}, status_code=410)
    return Response(json.dumps(down), media_type="application/json")
