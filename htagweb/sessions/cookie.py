"""The session cookie: a random 128-bit token, signed so that clients cannot choose one.

A missing, forged, tampered or expired cookie simply gets a fresh session: never an
error, and nothing on disk or in a store is ever named after what the client sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from itsdangerous import BadSignature, Signer
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .base import SessionStore, new_session_id, new_token, private_dir
from .token_cache import token_cache_for
from .views import RequestSession

SESSION_SCOPE_KEY = "htagweb.session_id"  # the internal session id (never sent to a browser)
TOKEN_SCOPE_KEY = "htagweb.session_token"
COOKIE_SCOPE_KEY = "htagweb.set_cookie"  # set: the response carries a (new) cookie
NEW_SCOPE_KEY = "htagweb.session_new"  # True: a new session, not stored (yet)
TOKEN_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{22}\Z")
SECRET_FILE = "secret.key"


def load_or_create_secret(state_dir: Path) -> bytes:
    """The signing key shared by every worker: from a 0600 file, created once."""
    private_dir(state_dir)
    path = state_dir / SECRET_FILE
    if not path.exists():
        draft = state_dir / f".{SECRET_FILE}.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):  # another worker won the race: use its key
            os.link(draft, path)
        draft.unlink()
    return path.read_bytes().strip()


class SessionCookie:
    def __init__(
        self, secret_key: str | bytes, name: str = "session", path: str = "/", max_age: int = 0
    ) -> None:
        self.signer = Signer(secret_key, salt="htagweb.session")
        self.name = name
        self.path = path
        self.max_age = max_age

    def read(self, value: str | None) -> str | None:
        """The token in a cookie value, or None if it is absent or not ours."""
        if not value:
            return None
        try:
            token = self.signer.unsign(value.encode("latin-1")).decode()
        except (BadSignature, UnicodeError):
            return None
        return token if TOKEN_PATTERN.match(token) else None

    def header(self, token: str, secure: bool) -> str:
        value = self.signer.sign(token.encode()).decode()
        parts = [f"{self.name}={value}", f"Path={self.path}", "HttpOnly", "SameSite=Lax"]
        if self.max_age:
            parts.append(f"Max-Age={self.max_age}")
        if secure:
            parts.append("Secure")
        return "; ".join(parts)


def rotate_session(connection: HTTPConnection) -> None:
    """Give this request's session a new token, keeping its data (call it at login and logout).

    When the response starts, everything opened with the old cookie is cut: the session's
    app processes end (their WebSockets and event streams close, their pages reload), and
    its data moves to a new cookie and a new internal id, so that a request that read the
    old cookie a moment before reaches an empty session. The next page load starts the
    apps afresh, `tag.state` kept.
    """
    connection.scope[COOKIE_SCOPE_KEY] = "rotate"


def refresh_session_cookie(connection: HTTPConnection) -> None:
    """Send the cookie again with this response, restarting its Max-Age."""
    connection.scope.setdefault(COOKIE_SCOPE_KEY, "refresh")


async def store_session(connection: HTTPConnection) -> None:
    """Store this request's session now if it is new (a page load is about to use it)."""
    session = connection.scope["session"]
    if isinstance(session, RequestSession) and connection.scope.get(NEW_SCOPE_KEY):
        store: SessionStore = session.store
        await run_in_threadpool(store.create, connection.scope[TOKEN_SCOPE_KEY], session.session_id)
        connection.scope[NEW_SCOPE_KEY] = False
        connection.scope[COOKIE_SCOPE_KEY] = "new"


class SessionMiddleware:
    """Resolves the session of each request; request.session is its data.

    scope["htagweb.session_id"] is the session's internal id; changes made through
    request.session are saved when the response starts. A request without a valid
    cookie gets a new session that is stored (and given a cookie) only if a page loads
    or something is written into it. Every store call runs in a thread.

    An internal HTTP request (an interaction) takes its session id from `tokens`, a few
    seconds' memory of what the store answered (see token_cache.py), sparing it the
    thread; page loads, other routes and WebSockets always ask the store.

    `on_rotate(session_id)` is awaited before a session is rotated (before the response
    starts), with the id that then stops reaching its data; `internal(scope)` names
    requests that never read request.session (nothing is read ahead for them).
    """

    def __init__(
        self,
        app: ASGIApp,
        cookie: SessionCookie,
        store: SessionStore,
        on_rotate: Callable[[str], Awaitable[None]] | None = None,
        internal: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.cookie = cookie
        self.store = store
        self.on_rotate = on_rotate
        self.internal = internal
        self.tokens = token_cache_for(store)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        token = self.cookie.read(connection.cookies.get(self.cookie.name))
        internal = self.internal is not None and self.internal(scope)
        read_ahead = scope["type"] == "http" and not internal
        session = None
        if token:
            session = self._remembered(token) if scope["type"] == "http" and internal else None
            if session is None:
                mark = self.tokens.mark()
                session = await run_in_threadpool(self._open, token, read_ahead)
                if session is not None:
                    self.tokens.put(token, session.session_id, mark)
        new = session is None
        if session is None:
            token = new_token()
            session = RequestSession(self.store, new_session_id(), new=True)
        scope[TOKEN_SCOPE_KEY] = token
        scope[SESSION_SCOPE_KEY] = session.session_id
        scope[NEW_SCOPE_KEY] = new
        scope["session"] = session
        if scope["type"] != "http":  # a WebSocket cannot set a cookie: a new one stores nothing
            await self.app(scope, receive, send)
            return

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A session this request creates has nothing to cut off: it is not rotated.
                rotating = scope.get(COOKIE_SCOPE_KEY) == "rotate" and not scope[NEW_SCOPE_KEY]
                if rotating:
                    self.tokens.drop(scope[TOKEN_SCOPE_KEY])  # this worker at once
                if rotating and self.on_rotate is not None:
                    # First, so that what the old cookie opened writes nothing after the move.
                    await self.on_rotate(session.session_id)
                if session.modified or rotating:
                    await run_in_threadpool(self._save, scope, session, rotating)
                if scope.get(COOKIE_SCOPE_KEY) and not scope[NEW_SCOPE_KEY]:
                    secure = scope.get("scheme") == "https"
                    header = self.cookie.header(scope[TOKEN_SCOPE_KEY], secure=secure)
                    MutableHeaders(scope=message).append("set-cookie", header)
            await send(message)

        await self.app(scope, receive, send_with_session)

    def _remembered(self, token: str) -> RequestSession | None:
        """The session `token` reached a moment ago, as the store said (nothing read)."""
        session_id = self.tokens.get(token)
        return None if session_id is None else RequestSession(self.store, session_id)

    def _open(self, token: str, read_ahead: bool) -> RequestSession | None:
        """The live session `token` reaches, its data read if asked; None if there is none.
        Blocking: runs in a thread."""
        session_id = self.store.resolve(token)
        if session_id is None:
            return None
        session = RequestSession(self.store, session_id)
        if read_ahead:
            session.preload()
        return session

    def _save(self, scope: Scope, session: RequestSession, rotate: bool) -> None:
        """Store what the request changed (and a new session it wrote into), then rotate
        the session if asked. Blocking: runs in a thread."""
        if session.modified and scope[NEW_SCOPE_KEY]:
            self.store.create(scope[TOKEN_SCOPE_KEY], session.session_id)
            scope[NEW_SCOPE_KEY] = False
            scope[COOKIE_SCOPE_KEY] = "new"
        session.save()
        if not rotate:
            return
        token = new_token()
        session_id = self.store.rotate(scope[TOKEN_SCOPE_KEY], token)
        if session_id is None:  # rotated meanwhile (a login sent twice): leave its cookie be
            scope[COOKIE_SCOPE_KEY] = None
        else:
            scope[TOKEN_SCOPE_KEY], scope[SESSION_SCOPE_KEY] = token, session_id
