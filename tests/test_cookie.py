"""The session cookie: signed random ids; anything else is a fresh session."""

from __future__ import annotations

import os
import stat

from htagweb.sessions.base import new_token as new_session_id
from htagweb.sessions.cookie import SessionCookie, load_or_create_secret


def test_ids_are_random_128_bits():
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 22 for i in ids)


def test_only_our_signature_is_accepted():
    cookie = SessionCookie("key-one")
    header = cookie.header("A" * 22, secure=False)
    value = header.split(";")[0].split("=", 1)[1]
    assert cookie.read(value) == "A" * 22
    assert SessionCookie("key-two").read(value) is None  # other key
    tampered = "B" + value[1:]
    for bad in (tampered, "A" * 22, "", None, "x.y", "\udcff", value + "x"):
        assert cookie.read(bad) is None
    forged_shape = SessionCookie("key-one").signer.sign(b"../../etc/passwd").decode()
    assert cookie.read(forged_shape) is None  # signed but not an id of ours


def test_cookie_flags():
    cookie = SessionCookie("k", name="sid", path="/app")
    plain = cookie.header(new_session_id(), secure=False)
    assert plain.startswith("sid=") and "Path=/app" in plain
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    assert "Secure" in cookie.header(new_session_id(), secure=True)


def test_secret_is_created_once_private_and_reused(tmp_path):
    first = load_or_create_secret(tmp_path / "state")
    assert load_or_create_secret(tmp_path / "state") == first and len(first) >= 48
    path = tmp_path / "state" / "secret.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["secret.key"]
