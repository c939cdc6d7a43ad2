"""A relay that changes traffic: what a proxy or a worker between page and app could do.

It carries everything between the browser and the server at RELAY_UPSTREAM, and adds
unsealed htag actions on the way (a parano page must apply none of them):

- in each WebSocket, right after the server's key exchange;
- in each event stream, right before the first push the server sends;
- in place of the answer to the first sealed interaction posted over HTTP (the server
  did apply it: the page sends it again and gets the true answer).

It prints a line for each, which the tests wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

UPSTREAM = os.environ["RELAY_UPSTREAM"]
PWNED_BODY = '<body><p class="pwned">pwned</p></body>'
INJECTED = [
    {"update": {"0": PWNED_BODY}},
    {"post": "document.title = 'pwned'"},
    {"next": "document.title = 'pwned'"},
    {"err": "injected by the relay", "post": "document.title = 'pwned'"},
]
ANSWER = {"update": {"0": PWNED_BODY}, "post": "document.title = 'pwned'", "seq": 1}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length"}

client: httpx.AsyncClient | None = None
answers_replaced = 0


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global client
    client = httpx.AsyncClient(base_url=UPSTREAM, timeout=None)
    yield
    await client.aclose()


def _response_headers(upstream: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [
        (name.lower().encode(), value.encode())
        for name, value in upstream.headers.multi_items()
        if name.lower() not in HOP_BY_HOP
    ]


async def forward(request: Request) -> Response:
    global answers_replaced
    assert client is not None
    body = await request.body()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    upstream = await client.send(
        client.build_request(request.method, target, headers=headers, content=body), stream=True
    )
    if upstream.headers.get("content-type", "").startswith("text/event-stream"):
        response: Response = StreamingResponse(_tampered_events(upstream), upstream.status_code)
    else:
        content = await upstream.aread()
        await upstream.aclose()
        if request.method == "POST" and answers_replaced == 0 and '"d"' in body.decode():
            answers_replaced += 1
            print("replaced the answer to a sealed interaction", flush=True)
            content = json.dumps(ANSWER).encode()
        response = Response(content, upstream.status_code)
    response.raw_headers = [
        *(h for h in response.raw_headers if h[0] == b"content-length"),
        *_response_headers(upstream),
    ]
    return response


async def _tampered_events(upstream: httpx.Response) -> AsyncIterator[bytes]:
    injected = False
    try:
        async for chunk in upstream.aiter_raw():
            if not injected and b"data:" in chunk:  # the first push: the actions go first
                injected = True
                for actions in INJECTED:
                    yield f"data: {json.dumps(actions)}\n\n".encode()
                print("injected into an event stream", flush=True)
            yield chunk
    finally:
        await upstream.aclose()


async def relay_socket(websocket: WebSocket) -> None:
    url = UPSTREAM.replace("http", "ws", 1) + websocket.url.path + f"?{websocket.url.query}"
    cookie = websocket.headers.get("cookie", "")
    try:
        upstream = await connect(url, additional_headers={"Cookie": cookie})
    except (OSError, InvalidStatus):
        await websocket.close(1011)
        return
    await websocket.accept()

    async def up() -> None:
        with contextlib.suppress(WebSocketDisconnect, ConnectionClosed):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await upstream.send(message["text"])

    async def down() -> None:
        injected = False
        with contextlib.suppress(WebSocketDisconnect, ConnectionClosed):
            async for text in upstream:
                await websocket.send_text(str(text))
                if not injected and '"hello"' in str(text):  # keys agreed: now the actions
                    injected = True
                    for actions in INJECTED:
                        await websocket.send_text(json.dumps(actions))
                    print("injected into a socket", flush=True)

    tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await upstream.close()
    code: Any = upstream.close_code
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code if code and 1000 <= code < 5000 and code != 1006 else 1000)


app = Starlette(
    routes=[
        Route("/{path:path}", forward, methods=["GET", "HEAD", "POST"]),
        WebSocketRoute("/{path:path}", relay_socket),
    ],
    lifespan=lifespan,
)
