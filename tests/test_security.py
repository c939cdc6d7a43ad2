"""A client can only call what its page could call, and only from this site."""

from __future__ import annotations

import json
import re
import sys

import pytest
from support import User, text_of_class, wait_for_exit
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


COUNTER = [sys.executable, "-m", "uvicorn", "counter_server:app", "--port", "{port}"]


def test_live_processes_per_ip_are_limited_when_asked(serve_forked):
    server = serve_forked(COUNTER, env={"COUNTER_MAX_PER_IP": "2"})
    first, second, third = User(server.url), User(server.url), User(server.url)
    first.get()
    second.get()
    refused = third.http.get("/")
    assert refused.status_code == 429 and "too many apps open from this address" in refused.text
    first_page = first.get()  # a user whose process lives reloads as before
    first.post(first_page, first_page.click("exit"))  # tag.exit(): one process fewer
    assert wait_for_exit(int(first_page.text_of("pid")), 15)
    assert third.get().text_of("count") == "0"


def test_new_sessions_per_ip_are_limited_when_asked(serve_forked):
    server = serve_forked(COUNTER, env={"COUNTER_NEW_SESSIONS_PER_IP": "3"})
    users = [User(server.url) for _ in range(3)]
    for user in users:
        user.get()
    refused = User(server.url).http.get("/")
    assert refused.status_code == 429 and "too many new sessions" in refused.text
    assert users[0].get().text_of("count") == "0"  # known sessions are not new ones


@pytest.mark.parametrize("trusted", [True, False])
def test_per_ip_limits_see_the_client_behind_a_trusted_proxy_only(serve_forked, trusted):
    proxy_option = ["--forwarded-allow-ips", "127.0.0.1"] if trusted else ["--no-proxy-headers"]
    server = serve_forked([*COUNTER, *proxy_option], env={"COUNTER_MAX_PER_IP": "1"})

    def load(address: str) -> int:
        return User(server.url).http.get("/", headers={"X-Forwarded-For": address}).status_code

    assert load("10.0.0.1") == 200
    assert load("10.0.0.2") == (200 if trusted else 429)
    assert load("10.0.0.1") == 429
    if trusted:  # IPv6 counts by /64: one subscriber's whole range is one client
        assert load("2001:db8::1") == 200
        assert load("2001:db8::99") == 429


def test_message_size_is_an_option_for_posts_and_websockets(serve_forked):
    server = serve_forked(COUNTER, env={"COUNTER_MAX_MESSAGE": "2000"})
    user = User(server.url)
    page = user.get()
    big = {**page.click("inc"), "kargs": {"x": "y" * 3000}}
    response = user.post(page, big)
    assert response.status_code == 413 and "over 2000 bytes" in response.text
    with user.websocket(page) as ws:
        ws.send(json.dumps(page.click("inc")))
        assert ">1<" in ws.recv(timeout=10)
        ws.send(json.dumps(big))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1009
    assert ">2<" in user.post(page, page.click("inc")).text  # the app goes on
