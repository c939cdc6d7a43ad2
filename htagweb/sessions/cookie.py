"""The session cookie: a random 128-bit token, signed so that clients cannot choose one.

A missing, forged, tampered or expired cookie simply gets a fresh session: never an
error, and nothing on disk or in a store is ever named after what the client sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from itsdangerous import BadSignature, Signer
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .base import SessionStore, new_session_id, new_token
from .views import RequestSession

SESSION_SCOPE_KEY = "htagweb.session_id"  # the internal session id (never sent to a browser)
TOKEN_SCOPE_KEY = "htagweb.session_token"
COOKIE_SCOPE_KEY = "htagweb.set_cookie"  # set: the response carries a (new) cookie
TOKEN_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{22}\Z")
SECRET_FILE = "secret.key"


def load_or_create_secret(state_dir: Path) -> bytes:
    """The signing key shared by every worker: from a 0600 file, created once."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
    """Give this request's session a new id, keeping its data (call it right after login).

    The old cookie stops working; the response carries the new one. The user's
    running apps are not disturbed.
    """
    connection.scope[COOKIE_SCOPE_KEY] = "rotate"


def refresh_session_cookie(connection: HTTPConnection) -> None:
    """Send the cookie again with this response, restarting its Max-Age."""
    connection.scope.setdefault(COOKIE_SCOPE_KEY, "refresh")


class SessionMiddleware:
    """Resolves the session of each request; request.session is its data.

    scope["htagweb.session_id"] is the session's internal id; changes made through
    request.session are saved when the response starts.
    """

    def __init__(self, app: ASGIApp, cookie: SessionCookie, store: SessionStore) -> None:
        self.app = app
        self.cookie = cookie
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        token = self.cookie.read(connection.cookies.get(self.cookie.name))
        session_id = self.store.resolve(token) if token else None
        if session_id is None and scope["type"] == "websocket":
            token, session_id = "", new_session_id()  # cannot set a cookie: store nothing
        elif session_id is None:
            token = new_token()
            session_id = self.store.create(token)
            scope[COOKIE_SCOPE_KEY] = "new"
        scope[TOKEN_SCOPE_KEY] = token
        scope[SESSION_SCOPE_KEY] = session_id
        session = scope["session"] = RequestSession(self.store, session_id)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                session.save()
                cookie = scope.get(COOKIE_SCOPE_KEY)
                if cookie:
                    current = scope[TOKEN_SCOPE_KEY]
                    if cookie == "rotate":
                        rotated = new_token()
                        if self.store.rotate(current, rotated):
                            scope[TOKEN_SCOPE_KEY] = current = rotated
                    header = self.cookie.header(current, secure=scope.get("scheme") == "https")
                    MutableHeaders(scope=message).append("set-cookie", header)
            await send(message)

        await self.app(scope, receive, send_with_session)
