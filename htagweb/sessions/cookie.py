"""The session cookie: a random 128-bit id, signed so that clients cannot choose one.

A missing, forged or tampered cookie simply gets a fresh session: never an error, and
nothing on disk or in a store is ever named after what the client sent.
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

SESSION_SCOPE_KEY = "htagweb.session_id"
SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
SECRET_FILE = "secret.key"


def new_session_id() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits, 22 characters


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
        """The session id in a cookie value, or None if it is absent or not ours."""
        if not value:
            return None
        try:
            session_id = self.signer.unsign(value.encode("latin-1")).decode()
        except (BadSignature, UnicodeError):
            return None
        return session_id if SESSION_ID_PATTERN.match(session_id) else None

    def header(self, session_id: str, secure: bool) -> str:
        value = self.signer.sign(session_id.encode()).decode()
        parts = [f"{self.name}={value}", f"Path={self.path}", "HttpOnly", "SameSite=Lax"]
        if self.max_age:
            parts.append(f"Max-Age={self.max_age}")
        if secure:
            parts.append("Secure")
        return "; ".join(parts)


class SessionMiddleware:
    """Puts the session id in scope["htagweb.session_id"]; sets the cookie when new."""

    def __init__(self, app: ASGIApp, cookie: SessionCookie) -> None:
        self.app = app
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        session_id = self.cookie.read(connection.cookies.get(self.cookie.name))
        is_new = session_id is None
        scope[SESSION_SCOPE_KEY] = session_id = session_id or new_session_id()
        if not is_new or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = self.cookie.header(session_id, secure=scope.get("scheme") == "https")

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", header)
            await send(message)

        await self.app(scope, receive, send_with_cookie)
