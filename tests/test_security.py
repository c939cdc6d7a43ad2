"""A client can only call what its page could call, and only from this site."""

from __future__ import annotations

import json
import re
import sys

import pytest
from support import User, text_of_class
from websockets.exceptions import ConnectionClosed, InvalidStatus

GUARDED = [sys.executable, "-m", "uvicorn", "guarded_server:app", "--port", "{port}"]

HOSTILE_METHODS = [
    "__setattr__", "__getattribute__", "__class__", "__init__", "__del__", "__reduce__",
    "__dict__", "_private", "_hr", "exit", "clear", "update", "call", "add", "remove",
    "bind", "init", "render", "secret", "show", "count", "root", "parent", "no_such_method",
    "inc",  # a real callback, but only reachable through htag's event caller
]  # fmt: skip


def count_of(answer) -> int | None:
    updates = answer.json().get("update", {})
    return int(text_of_class(next(iter(updates.values())), "count")) if updates else None


def root_id(page) -> int:
    return int(re.search(r'<body id="(\d+)"', page.html).group(1))


def test_hostile_method_names_are_refused_and_the_app_goes_on(serve_forked):
    server = serve_forked(GUARDED)
    user = User(server.url)
    page = user.get()
    for method in HOSTILE_METHODS:
        for target in (root_id(page), page.click("inc")["id"]):
            payload = {"id": target, "method": method, "args": ["count", 1000], "kargs": {}}
            answer = user.post(page, payload)
            assert answer.status_code == 200
            assert answer.json() == {"err": "This action is not allowed."}, method
    refusals = 2 * len(HOSTILE_METHODS)
    assert server.wait_for_log("refused an interaction", refusals) >= refusals
    assert count_of(user.post(page, page.click("inc"))) == 1  # unharmed: count was 0


def test_what_the_page_can_call_still_works(serve_forked):
    server = serve_forked(GUARDED)
    user = User(server.url)
    page = user.get()
    assert count_of(user.post(page, page.click("inc"))) == 1
    assert count_of(user.post(page, page.click("bound"))) == 6  # self.bind.bump(5)
    exposed = {"id": root_id(page), "method": "exposed", "args": [10], "kargs": {}}
    assert count_of(user.post(page, exposed)) == 16  # @expose


@pytest.mark.parametrize(
    ("args", "kargs"),
    [
        ([], {}),
        (["onclick-1"], {}),
        ([None], {}),
        ([{"nested": [1, {"x": None}]}], {}),
        ([12345678901234567890123], {}),
        (["x" * 100_000], {}),
        ([], {"unexpected": 1}),
        (list(range(1000)), {}),
    ],
)
def test_odd_arguments_to_an_event_caller_get_an_error_action_not_a_crash(
    serve_forked, args, kargs
):
    server = serve_forked(GUARDED)
    user = User(server.url)
    page = user.get()
    payload = {**page.click("inc"), "args": args, "kargs": kargs}
    answer = user.post(page, payload)
    assert answer.status_code == 200 and "err" in answer.json()
    assert "Traceback" not in answer.text
    assert count_of(user.post(page, page.click("inc"))) == 1


def test_cross_site_interactions_are_refused(serve_forked):
    server = serve_forked(GUARDED)
    user = User(server.url)
    page = user.get()
    url = f"{page.endpoint}?i={page.instance}"
    evil = user.http.post(url, json=page.click("inc"), headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    by_referer = user.http.post(
        url, json=page.click("inc"), headers={"Referer": "https://evil.example/page"}
    )
    assert by_referer.status_code == 403
    ours = user.http.post(url, json=page.click("inc"), headers={"Origin": server.url})
    assert ours.status_code == 200 and count_of(ours) == 1  # the evil ones changed nothing
    with pytest.raises(InvalidStatus) as refused, _websocket(user, page, "https://evil.example"):
        pass
    assert refused.value.response.status_code == 403
    with _websocket(user, page, server.url) as ours_ws:
        ours_ws.send(json.dumps(page.click("inc")))
        assert ">2<" in ours_ws.recv(timeout=10)


def test_allowed_origins_option_lets_a_named_site_in(serve_forked):
    env = {"GUARDED_ALLOWED_ORIGINS": "https://partner.example"}
    server = serve_forked(GUARDED, env=env)
    user = User(server.url)
    page = user.get()
    url = f"{page.endpoint}?i={page.instance}"
    headers = {"Origin": "https://partner.example"}
    assert user.http.post(url, json=page.click("inc"), headers=headers).status_code == 200
    headers = {"Origin": "https://other.example"}
    assert user.http.post(url, json=page.click("inc"), headers=headers).status_code == 403


def _websocket(user: User, page, origin: str):
    from websockets.sync.client import connect

    ws_url = user.base_url.replace("http", "ws", 1) + f"{page.endpoint}?i={page.instance}"
    cookie = "; ".join(f"{k}={v}" for k, v in user.http.cookies.items())
    return connect(ws_url, additional_headers={"Cookie": cookie}, origin=origin, open_timeout=30)


def test_interactions_past_the_rate_limit_get_429_or_a_closed_socket(serve_forked):
    server = serve_forked(GUARDED, env={"GUARDED_RATE": "10"})  # bursts of 20
    user = User(server.url)
    page = user.get()
    statuses = [user.post(page, page.click("inc")).status_code for _ in range(60)]
    assert statuses.count(429) >= 30 and statuses[:15] == [200] * 15
    with user.websocket(page) as ws, pytest.raises(ConnectionClosed) as closed:
        for _ in range(60):  # the server may close while these are still being sent
            ws.send(json.dumps(page.click("inc")))
        while True:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "too many interactions"
