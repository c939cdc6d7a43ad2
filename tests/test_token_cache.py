"""A worker's short memory of which session a token reaches (sessions/token_cache.py), and
which requests the session middleware lets use it. In-process, with a store that counts
its resolves; the attacks on a real server are in test_attacks.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message, Scope

from htagweb.sessions import MemoryStore, SQLiteStore
from htagweb.sessions.base import new_token
from htagweb.sessions.cookie import (
    SESSION_SCOPE_KEY,
    SessionCookie,
    SessionMiddleware,
    rotate_session,
    store_session,
)
from htagweb.sessions.token_cache import TOKEN_CACHE_TTL, TokenCache, token_cache_for
from htagweb.web.runner import _is_internal

COOKIE = SessionCookie("k" * 32)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.resolves = 0

    def resolve(self, token: str) -> str | None:
        self.resolves += 1  # requests here run one at a time
        return super().resolve(token)


# -- the cache ---------------------------------------------------------------------------


def test_an_entry_is_trusted_for_its_ttl_from_when_the_store_gave_it_not_from_its_use():
    clock = Clock()
    cache = TokenCache(ttl=5, max_entries=10, clock=clock)
    cache.put("t", "s1", cache.mark())
    for now in (100.0, 102.0, 104.9):
        clock.now = now
        assert cache.get("t") == "s1"  # used all along: its expiry does not move
    clock.now = 105.0
    assert cache.get("t") is None
    assert len(cache) == 0


def test_the_cache_never_holds_more_than_its_bound_the_oldest_going_first():
    cache = TokenCache(ttl=5, max_entries=100, clock=Clock())
    for n in range(1000):
        cache.put(f"t{n}", f"s{n}", cache.mark())
        assert len(cache) <= 100
    assert cache.get("t899") is None and cache.get("t900") == "s900"
    assert cache.get("t999") == "s999"


def test_expired_entries_go_as_new_ones_come_in():
    clock = Clock()
    cache = TokenCache(ttl=5, max_entries=100, clock=clock)
    for n in range(50):
        cache.put(f"t{n}", f"s{n}", cache.mark())
    clock.now += 5
    cache.put("late", "s", cache.mark())
    assert len(cache) == 1  # not kept until the bound is reached


def test_a_token_put_again_gets_a_new_expiry_and_moves_to_the_end():
    clock = Clock()
    cache = TokenCache(ttl=5, max_entries=2, clock=clock)
    cache.put("a", "s1", cache.mark())
    clock.now += 1
    cache.put("b", "s2", cache.mark())
    cache.put("a", "s1", cache.mark())  # the store answered again for "a"
    cache.put("c", "s3", cache.mark())  # over the bound: "b" is now the oldest
    assert cache.get("b") is None and cache.get("a") == "s1" and cache.get("c") == "s3"


def test_a_dropped_token_is_forgotten_and_an_answer_older_than_the_drop_is_not_kept():
    cache = TokenCache(ttl=5, max_entries=10, clock=Clock())
    cache.put("t", "s1", cache.mark())
    asked = cache.mark()  # a request asks the store for "t"...
    cache.drop("t")  # ...while another rotates its session
    assert cache.get("t") is None
    cache.put("t", "s1", asked)  # the store's answer may predate the rotation
    assert cache.get("t") is None
    cache.put("t", "s2", cache.mark())  # asked after it: kept
    assert cache.get("t") == "s2"


def test_a_cache_of_ttl_zero_keeps_nothing():
    cache = TokenCache(ttl=0)
    cache.put("t", "s1", cache.mark())
    assert not cache.enabled and len(cache) == 0 and cache.get("t") is None


def test_only_a_store_of_one_host_gets_a_cache_and_its_ttl_stays_well_inside_idle_expiry(
    tmp_path,
):
    assert token_cache_for(MemoryStore()).ttl == TOKEN_CACHE_TTL
    assert token_cache_for(SQLiteStore(tmp_path / "s.sqlite")).ttl == TOKEN_CACHE_TTL
    assert token_cache_for(MemoryStore(idle_expiry=8)).ttl == 2  # a quarter of it
    redis = pytest.importorskip("htagweb.sessions.redis")
    # Never connected: a rotation on another host cannot end this host's processes.
    assert not token_cache_for(redis.RedisStore("redis://127.0.0.1:9/0")).enabled

    class OwnStore(MemoryStore):
        local_to_host = False  # a store that may be shared: asked every time

    assert not token_cache_for(OwnStore()).enabled


# -- the middleware ------------------------------------------------------------------------


class Server:
    """SessionMiddleware over a few routes, as the Runner sets it up (internal paths)."""

    def __init__(self) -> None:
        self.store = CountingStore()
        self.rotated: list[str] = []
        self.clock = Clock()

        async def session_of(request: Request) -> PlainTextResponse:
            return PlainTextResponse(request.scope[SESSION_SCOPE_KEY])

        async def page(request: Request) -> PlainTextResponse:
            await store_session(request)
            return await session_of(request)

        async def login(request: Request) -> PlainTextResponse:
            rotate_session(request)
            return await session_of(request)

        async def on_rotate(session_id: str) -> None:
            self.rotated.append(session_id)

        routes = [
            Route("/", page),
            Route("/login", login),
            Route("/other", session_of),
            Route("/_/{fqn}", session_of, methods=["POST"]),
            Route("/_htagweb/{name}", session_of),
        ]
        self.middleware = SessionMiddleware(
            Starlette(routes=routes), COOKIE, self.store, on_rotate, _is_internal
        )
        self.middleware.tokens = TokenCache(ttl=5, clock=self.clock)

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.middleware)
        return httpx.AsyncClient(transport=transport, base_url="http://test")

    async def websocket_session(self, cookies: httpx.Cookies, path: str) -> str:
        """The session id a WebSocket to `path` gets (the app behind only notes it)."""
        seen: list[str] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            seen.append(scope[SESSION_SCOPE_KEY])

        cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
        scope = {
            "type": "websocket",
            "path": path,
            "root_path": "",
            "headers": [(b"cookie", cookie.encode())],
        }

        async def nothing() -> Message:
            return {"type": "websocket.disconnect"}

        async def ignore(message: Message) -> None:
            pass

        middleware = SessionMiddleware(app, COOKIE, self.store, internal=_is_internal)
        middleware.tokens = self.middleware.tokens  # the same worker's memory
        await middleware(scope, nothing, ignore)
        return seen[0]


async def page_load(server: Server, client: httpx.AsyncClient) -> str:
    response = await client.get("/")
    assert response.status_code == 200
    return response.text


def test_repeated_clicks_within_the_ttl_ask_the_store_once():
    async def run() -> None:
        server = Server()
        async with server.client() as client:
            session_id = await page_load(server, client)  # a new session: nothing to resolve
            assert server.store.resolves == 0
            for _ in range(20):
                assert (await client.post("/_/app.App")).text == session_id
            assert server.store.resolves == 1
            assert (await client.get("/_htagweb/client.js")).text == session_id  # also internal
            assert server.store.resolves == 1
            server.clock.now += 5  # the ttl passed: asked again, once
            for _ in range(20):
                assert (await client.post("/_/app.App")).text == session_id
            assert server.store.resolves == 2

    asyncio.run(run())


def test_page_loads_other_routes_and_websockets_always_ask_the_store():
    async def run() -> None:
        server = Server()
        async with server.client() as client:
            session_id = await page_load(server, client)
            await client.post("/_/app.App")  # remembered from here on
            assert server.store.resolves == 1
            assert await page_load(server, client) == session_id
            assert (await client.get("/other")).text == session_id
            assert await server.websocket_session(client.cookies, "/_/app.App") == session_id
            assert server.store.resolves == 4  # one each
            assert (await client.post("/_/app.App")).text == session_id
            assert server.store.resolves == 4

    asyncio.run(run())


def test_a_session_not_stored_is_never_remembered():
    async def run() -> None:
        server = Server()
        async with server.client() as client:
            first = (await client.post("/_/app.App")).text  # no cookie: a new session...
            second = (await client.post("/_/app.App")).text
            assert first != second and len(server.middleware.tokens) == 0  # ...each time
            unknown = COOKIE.header(new_token(), secure=False).split(";")[0].split("=", 1)[1]
            client.cookies.set("session", unknown)  # signed by us, stored nowhere
            for _ in range(3):
                await client.post("/_/app.App")
            assert server.store.resolves == 3 and len(server.middleware.tokens) == 0

    asyncio.run(run())


def test_a_rotation_forgets_the_old_token_in_this_worker_at_once():
    async def run() -> None:
        server = Server()
        async with server.client() as client:
            session_id = await page_load(server, client)
            old_cookies = httpx.Cookies(client.cookies)
            assert (await client.post("/_/app.App")).text == session_id  # remembered
            assert (await client.get("/login")).status_code == 200
            assert server.rotated == [session_id]
            assert len(server.middleware.tokens) == 0
            new_id = (await client.post("/_/app.App")).text
            assert new_id != session_id  # the new cookie, through the store
        async with server.client() as stale:
            stale.cookies = old_cookies
            reached = (await stale.post("/_/app.App")).text
            assert reached not in (session_id, new_id)  # the old token reaches nothing

    asyncio.run(run())
