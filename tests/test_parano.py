"""Parano mode: sealed interactions, answers and pushes, seen from a client in Python.

The client below follows htagweb/app/parano.py's protocol with the cryptography package,
as the browser client does with WebCrypto (tests/test_browser.py runs that one).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from support import User
from websockets.exceptions import ConnectionClosed

from htagweb.app.parano import PageCipher, SealError

COUNTER = [sys.executable, "-m", "uvicorn", "counter_server:app", "--port", "{port}"]
PARANO = {"COUNTER_PARANO": "1", "COUNTER_RATE": "0"}


def nonce(channel: int, counter: int) -> bytes:
    return channel.to_bytes(4, "big") + counter.to_bytes(8, "big")


class Client:
    """One connection's keys and counters, on the page's side.

    `prover`: the keys the page held before, which prove this key exchange.
    """

    def __init__(self, prover: Client | None = None) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.raw = self.private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        self.key = base64.b64encode(self.raw).decode()
        self.hello = self.key if prover is None else f"{self.key}.{prover.prove(self.raw)}"
        self.sent = 0
        self.received = {"r": 0, "p": 0}
        self.streams = 0  # event streams opened with these keys

    def agree(self, server_hello: str) -> None:
        server_raw = base64.b64decode(server_hello)
        server_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), server_raw)
        shared = self.private.exchange(ec.ECDH(), server_key)
        keys = HKDF(
            algorithm=hashes.SHA256(), length=96, salt=self.raw + server_raw,
            info=b"htagweb parano v1",
        ).derive(shared)  # fmt: skip
        self.to_server, self.from_server = AESGCM(keys[:32]), AESGCM(keys[32:64])
        self.proof_key = keys[64:]

    def prove(self, new_raw: bytes) -> str:
        label = b"htagweb parano v1 proof"
        return base64.b64encode(hmac.digest(self.proof_key, label + new_raw, "sha256")).decode()

    def stream_proof(self) -> str:
        """The proof of the next event stream this page opens: "n.mac" (its e= parameter)."""
        self.streams += 1
        data = b"htagweb parano v1 stream" + str(self.streams).encode()
        mac = base64.b64encode(hmac.digest(self.proof_key, data, "sha256")).decode()
        return f"{self.streams}.{mac}"

    def seal(self, payload: dict) -> dict:
        self.sent += 1
        data = self.to_server.encrypt(nonce(1, self.sent), json.dumps(payload).encode(), None)
        return {"c": self.sent, "d": base64.b64encode(data).decode()}

    def open(self, message: dict) -> dict:
        channel = {"r": 2, "p": 3}[message["ch"]]
        assert message["c"] == self.received[message["ch"]] + 1, "out of order"
        self.received[message["ch"]] = message["c"]
        data = base64.b64decode(message["d"])
        return json.loads(self.from_server.decrypt(nonce(channel, message["c"]), data, None))


def counted(actions: dict) -> str:
    return json.dumps(actions.get("update", {}))


@pytest.fixture
def parano_user(serve_forked):
    server = serve_forked(COUNTER, env=PARANO)
    user = User(server.url)
    page = user.get()
    assert 'data-parano="1"' in page.html
    return server, user, page


def http_session(user: User, page, tab: str = "tab1") -> tuple[Client, str]:
    url = f"{page.endpoint}?i={page.instance}&p={tab}"
    client = Client()
    answer = user.http.post(url, json={"hello": client.hello})
    assert answer.status_code == 200, answer.text
    client.agree(answer.json()["hello"])
    return client, url


def test_sealed_clicks_over_http(parano_user):
    _, user, page = parano_user
    client, url = http_session(user, page)
    for expected in (">1<", ">2<"):
        response = user.http.post(
            url, json=client.seal({**page.click("inc"), "seq": client.sent + 1})
        )
        assert response.status_code == 200
        assert "update" not in response.text  # the worker saw only ciphertext
        assert expected in counted(client.open(response.json()))


def test_plaintext_interactions_are_refused(parano_user):
    server, user, page = parano_user
    refused = user.post(page, page.click("inc")).json()
    assert "sealed interactions only" in refused["err"] and "update" not in refused
    with user.websocket(page) as ws:  # a socket without the key exchange: not even attached
        assert until_closed(ws) == ([{"reload": True}], 1008)
    on_socket = Client()
    with sealed_socket(user, page, "tab0", on_socket) as ws:  # keys agreed, then plaintext
        on_socket.agree(json.loads(ws.recv(timeout=10))["hello"])
        ws.send(json.dumps(page.click("inc")))
        assert "sealed interactions only" in json.loads(ws.recv(timeout=10))["err"]
    with user.websocket(page, extra="&p=tab1&s=1") as ws:  # keys announced, not sent
        ws.send(json.dumps(page.click("inc")))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008
    client, url = http_session(user, page)
    answer = client.open(user.http.post(url, json=client.seal(page.click("inc"))).json())
    assert ">1<" in counted(answer)  # nothing of the refused ones was applied
    assert server.wait_for_log("refused a plaintext interaction") >= 1


def test_replayed_reordered_and_forged_messages_are_refused(parano_user):
    """A counter out of turn gets "rekey" (the page agrees on new keys), a forged one "err";
    neither is applied."""
    _, user, page = parano_user
    client, url = http_session(user, page)
    first = client.seal(page.click("inc"))
    assert ">1<" in counted(client.open(user.http.post(url, json=first).json()))
    second = client.seal(page.click("inc"))
    third = client.seal(page.click("inc"))
    early = user.http.post(url, json=third)
    assert early.status_code == 409 and early.json() == {"rekey": True}
    assert ">2<" in counted(client.open(user.http.post(url, json=second).json()))
    replayed = user.http.post(url, json=first)  # an older message, not the last
    assert replayed.status_code == 409 and replayed.json() == {"rekey": True}
    client.sent = 2  # the next counter due is 3: forge a message that carries it
    forged = client.seal(page.click("inc"))
    forged["d"] = base64.b64encode(b"\0" * 40).decode()
    assert user.http.post(url, json=forged).json() == {"err": "This action is not allowed."}
    stranger = Client()  # sealed with keys the app never agreed on
    stranger.agree(Client().hello)
    stranger.sent = 2
    sealed = stranger.seal(page.click("inc"))
    assert user.http.post(url, json=sealed).json() == {"err": "This action is not allowed."}
    client.sent = 2  # refused messages did not count: 3 is still the next number
    assert ">3<" in counted(
        client.open(user.http.post(url, json=client.seal(page.click("inc"))).json())
    )


def test_the_last_message_sent_again_gets_the_same_answer_and_is_applied_once(parano_user):
    _, user, page = parano_user
    client, url = http_session(user, page)
    click = client.seal(page.click("inc"))
    answer = user.http.post(url, json=click).json()
    assert user.http.post(url, json=click).json() == answer  # the answer was lost: resent
    assert ">1<" in counted(client.open(answer))
    assert ">2<" in counted(
        client.open(user.http.post(url, json=client.seal(page.click("inc"))).json())
    )


def test_a_page_without_keys_loads_again(parano_user):
    _, user, page = parano_user
    client, url = http_session(user, page)
    response = user.http.post(url.replace("tab1", "other"), json=client.seal(page.click("inc")))
    assert response.status_code == 410 and response.json() == {"reload": True}


def test_sealed_socket_with_pushes(parano_user):
    _, user, page = parano_user
    client = Client()
    with user.websocket(page, extra="&p=tab1&s=1") as ws:
        ws.send(json.dumps({"hello": client.hello}))
        client.agree(json.loads(ws.recv(timeout=10))["hello"])
        ws.send(json.dumps(client.seal(page.click("inc"))))
        assert ">1<" in counted(client.open(json.loads(ws.recv(timeout=10))))
        ws.send(json.dumps(client.seal(page.click("ticks"))))
        client.open(json.loads(ws.recv(timeout=10)))
        pushes = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
        assert [p["ch"] for p in pushes] == ["p", "p", "p"]
        opened = [client.open(push) for push in pushes]
        assert ">301<" in counted(opened[-1])
        ws.send(json.dumps({"c": 1, "d": pushes[0]["d"]}))  # a replay on this socket
        assert json.loads(ws.recv(timeout=10)) == {"rekey": True}
        ws.send(json.dumps({"c": 3, "d": pushes[0]["d"]}))  # the counter due, not its key
        assert json.loads(ws.recv(timeout=10)) == {"err": "This action is not allowed."}


def test_page_cipher_refuses_bad_keys_and_counters():
    with pytest.raises(SealError):
        PageCipher("not base64!")
    with pytest.raises(SealError):
        PageCipher(base64.b64encode(b"\4" + b"\1" * 64).decode())  # not on the curve
    client = Client()
    cipher = PageCipher(client.hello)
    client.agree(cipher.hello)
    message = client.seal({"id": 1})
    assert json.loads(cipher.open(message)) == {"id": 1}
    with pytest.raises(SealError, match="counter"):
        cipher.open(message)
    with pytest.raises(SealError):
        cipher.open({"c": 2, "d": 5})


def test_parano_per_handle_call(serve_forked):
    server = serve_forked(COUNTER)  # parano off for the server
    user = User(server.url)
    plain = user.get("/")
    assert 'data-parano="0"' in plain.html
    assert ">1<" in user.post(plain, plain.click("inc")).text
    sealed_page = user.get("/parano")
    assert 'data-parano="1"' in sealed_page.html
    assert "sealed interactions only" in user.post(sealed_page, sealed_page.click("inc")).text
    client, url = http_session(user, sealed_page)
    answer = client.open(user.http.post(url, json=client.seal(sealed_page.click("inc"))).json())
    assert ">1<" in counted(answer)


# -- keys belong to the page that agreed them ---------------------------------------------


def same_cookie(user: User) -> User:
    """Someone who read the user's traffic (no TLS): the same session cookie."""
    other = User(user.base_url)
    other.http.cookies.update(user.http.cookies)
    return other


def forged_proof() -> str:
    """A fresh key with a proof made up: what someone without the page's keys can send."""
    return f"{Client().key}.{base64.b64encode(os.urandom(32)).decode()}"


@contextlib.contextmanager
def sealed_socket(user: User, page, tab: str, client: Client) -> Iterator[Any]:
    """A parano socket of page `tab`, its hello sent."""
    with user.websocket(page, extra=f"&p={tab}&s=1") as ws:
        ws.send(json.dumps({"hello": client.hello}))
        yield ws


def until_closed(ws, timeout: float = 10) -> tuple[list[dict], int | None]:
    """What a socket receives until the server closes it (and the close code; None: the
    socket was still open after `timeout` seconds of silence)."""
    received = []
    try:
        while True:
            received.append(json.loads(ws.recv(timeout=timeout)))
    except ConnectionClosed as closed:
        return received, closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        return received, None


def test_a_sockets_keys_cannot_be_taken_by_someone_who_read_its_page_id(parano_user):
    """The attack: with the victim's cookie, page id and instance (all read on the wire),
    open a socket of that page with keys of one's own. Before, it got keys, the victim's
    socket lost its pushes, and they came to the attacker sealed with the attacker's keys.
    Now the socket is refused and closed, and the victim keeps its keys and pushes."""
    _, user, page = parano_user
    attacker = same_cookie(user)
    victim = Client()
    with sealed_socket(user, page, "victim", victim) as ws:
        victim.agree(json.loads(ws.recv(timeout=10))["hello"])
        for hello in (Client().hello, forged_proof()):
            with attacker.websocket(page, extra="&p=victim&s=1") as stolen:
                stolen.send(json.dumps({"hello": hello}))
                received, code = until_closed(stolen)
            assert received == [{"reload": True}]  # no keys: nothing it could open
            assert code == 1008
        ws.send(json.dumps(victim.seal(page.click("ticks"))))
        victim.open(json.loads(ws.recv(timeout=10)))
        pushes = [victim.open(json.loads(ws.recv(timeout=10))) for _ in range(3)]
        assert ">300<" in counted(pushes[-1])
    attacker.close()


def test_an_http_pages_keys_cannot_be_taken_by_someone_who_read_its_page_id(parano_user):
    """The same over HTTP: a key exchange posted with the victim's page id used to replace
    its keys (the victim's event stream then carried pushes sealed for the attacker)."""
    server, user, page = parano_user
    attacker = same_cookie(user)
    victim, url = http_session(user, page, "victim")
    stream_url = f"{url}&r=1&e={quote(victim.stream_proof(), safe='')}"
    with user.http.stream("GET", stream_url) as stream:  # the victim's pushes
        lines = stream.iter_lines()

        def next_push() -> dict:
            for line in lines:
                if line.startswith("data: "):
                    return victim.open(json.loads(line.removeprefix("data: ")))
            raise AssertionError("the event stream ended")

        assert '"0"' in counted(next_push())  # attached: the current page, sealed for the victim
        for hello in (Client().hello, forged_proof()):
            answer = attacker.http.post(url, json={"hello": hello})
            assert answer.status_code == 410 and answer.json() == {"reload": True}
        clicked = user.http.post(url, json=victim.seal(page.click("ticks")))
        victim.open(clicked.json())
        pushes = [next_push() for _ in range(3)]
        assert ">300<" in counted(pushes[-1])
    assert server.wait_for_log("refused a key exchange for a page that has keys") >= 2
    attacker.close()


def test_a_socket_that_reconnects_proves_its_keys_and_a_replayed_hello_is_refused(parano_user):
    _, user, page = parano_user
    attacker = same_cookie(user)
    first = Client()
    with sealed_socket(user, page, "tab1", first) as ws:
        first.agree(json.loads(ws.recv(timeout=10))["hello"])
        ws.send(json.dumps(first.seal(page.click("inc"))))
        assert ">1<" in counted(first.open(json.loads(ws.recv(timeout=10))))
    second = Client(prover=first)  # a reconnection: new keys, proven with the first ones
    with sealed_socket(user, page, "tab1", second) as ws:
        second.agree(json.loads(ws.recv(timeout=10))["hello"])
        ws.send(json.dumps(second.seal(page.click("inc"))))
        assert ">2<" in counted(second.open(json.loads(ws.recv(timeout=10))))
    lost = Client(prover=second)  # the app agrees, the page never gets the answer
    with sealed_socket(user, page, "tab1", lost) as ws:
        assert "hello" in json.loads(ws.recv(timeout=10))
    retry = Client(prover=second)  # so the page proves with the keys it has
    with sealed_socket(user, page, "tab1", retry) as ws:
        retry.agree(json.loads(ws.recv(timeout=10))["hello"])
        for replayed in (lost, retry, second):  # hellos read on the way and sent again
            with sealed_socket(attacker, page, "tab1", replayed) as stolen:
                assert until_closed(stolen) == ([{"reload": True}], 1008)
        ws.send(json.dumps(retry.seal(page.click("ticks"))))  # the page kept its socket
        retry.open(json.loads(ws.recv(timeout=10)))
        pushes = [retry.open(json.loads(ws.recv(timeout=10))) for _ in range(3)]
        assert ">302<" in counted(pushes[-1])
    attacker.close()


def test_new_keys_over_http_after_a_socket_or_a_counter_mismatch_are_proven(parano_user):
    _, user, page = parano_user
    on_socket = Client()
    with sealed_socket(user, page, "tab1", on_socket) as ws:
        on_socket.agree(json.loads(ws.recv(timeout=10))["hello"])
        ws.send(json.dumps(on_socket.seal(page.click("inc"))))
        assert ">1<" in counted(on_socket.open(json.loads(ws.recv(timeout=10))))
    # The socket is gone for good: the page goes on over HTTP, proving with its keys.
    url = f"{page.endpoint}?i={page.instance}&p=tab1"
    assert user.http.post(url, json={"hello": Client().hello}).status_code == 410
    http = Client(prover=on_socket)
    http.agree(user.http.post(url, json={"hello": http.hello}).json()["hello"])
    answer = http.open(user.http.post(url, json=http.seal(page.click("inc"))).json())
    assert ">2<" in counted(answer)
    http.sent += 1  # a message lost on the way: the counters are out of step
    early = user.http.post(url, json=http.seal(page.click("inc")))
    assert early.status_code == 409 and early.json() == {"rekey": True}
    rekeyed = Client(prover=http)  # no counter in the proof: it works all the same
    rekeyed.agree(user.http.post(url, json={"hello": rekeyed.hello}).json()["hello"])
    answer = rekeyed.open(user.http.post(url, json=rekeyed.seal(page.click("inc"))).json())
    assert ">3<" in counted(answer)


def test_a_page_whose_keys_were_forgotten_loads_again(parano_user):
    _, user, page = parano_user
    victim, url = http_session(user, page, "victim")
    for other in range(64):  # the app process keeps the keys of 64 pages
        http_session(user, page, f"other{other}")
    response = user.http.post(url, json=victim.seal(page.click("inc")))
    assert response.status_code == 410 and response.json() == {"reload": True}
    proven = Client(prover=victim)  # its proof is checked against nothing: no new keys
    response = user.http.post(url, json={"hello": proven.hello})
    assert response.status_code == 410 and response.json() == {"reload": True}
    reloaded, url = http_session(user, page, "reloaded")  # a page load: a new page id
    assert ">1<" in counted(
        reloaded.open(user.http.post(url, json=reloaded.seal(page.click("inc"))).json())
    )


def test_page_keys_are_renewed_only_with_a_proof():
    from htagweb.app.parano import KeysLost, KeysRefused, PageKeys

    def idle(page: str) -> bool:
        return False

    keys = PageKeys(limit=4)
    first = Client()
    first.agree(keys.agree("p", first.hello, idle).hello)
    stranger = Client()  # keys of some other agreement
    stranger.agree(PageCipher(stranger.key).hello)
    for unproven in (Client().hello, forged_proof(), Client(prover=stranger).hello):
        with pytest.raises(KeysRefused):
            keys.agree("p", unproven, idle)
    assert keys.get("p") is not None
    second = Client(prover=first)
    cipher = keys.agree("p", second.hello, idle)
    with pytest.raises(KeysRefused, match="again"):
        keys.agree("p", second.hello, idle)
    retry = Client(prover=first)  # second's answer was lost: the page still holds first
    retry.agree(keys.agree("p", retry.hello, idle).hello)
    assert keys.get("p") is not cipher
    with pytest.raises(KeysRefused, match="again"):
        keys.agree("p", second.hello, idle)
    third = Client(prover=retry)
    keys.agree("p", third.hello, idle)
    with pytest.raises(KeysRefused):  # first's keys proved for the last time before retry
        keys.agree("p", Client(prover=first).hello, idle)
    with pytest.raises(KeysLost):
        keys.agree("q", Client(prover=first).hello, idle)
    with pytest.raises(SealError, match="P-256"):
        keys.agree("q", "not a key.AAAA", idle)
    for page in "abcd":
        keys.agree(page, Client().hello, lambda page: page == "p")
    assert keys.get("p") is not None and keys.get("a") is None  # idle pages go first


# -- a page's pushes go to the connection that holds its keys ----------------------------


def data_events(lines: Iterator[str]) -> Iterator[dict]:
    """The messages of an event stream (its data lines, pings left out), until it ends."""
    for line in lines:
        if line.startswith("data: ") and line.strip() != "data:":
            yield json.loads(line.removeprefix("data: "))


def until_ended(stream: httpx.Response) -> tuple[list[dict], bool]:
    """What an event stream carries until the server ends it (True), or until a read finds
    nothing for the stream's timeout (False: it is still open)."""
    received: list[dict] = []
    try:
        received.extend(data_events(stream.iter_lines()))
    except httpx.ReadTimeout:
        return received, False
    return received, True


@contextlib.contextmanager
def victim_with_pushes(
    user: User, page, transport: str
) -> Iterator[tuple[Callable[[], list[dict]], list[str]]]:
    """Page "victim", holding its keys, with its push connection: a sealed socket, or an
    event stream proven with its keys. Yields a click on "ticks" that returns the three
    pushes the victim receives then, and the stream proofs one could read in its URLs."""
    if transport == "socket":
        victim = Client()
        with sealed_socket(user, page, "victim", victim) as ws:
            victim.agree(json.loads(ws.recv(timeout=10))["hello"])

            def ticks_on_socket() -> list[dict]:
                ws.send(json.dumps(victim.seal(page.click("ticks"))))
                victim.open(json.loads(ws.recv(timeout=10)))  # the answer, then the pushes
                return [victim.open(json.loads(ws.recv(timeout=10))) for _ in range(3)]

            yield ticks_on_socket, []
        return
    victim, url = http_session(user, page, "victim")
    proof = quote(victim.stream_proof(), safe="")
    with user.http.stream("GET", f"{url}&r=1&e={proof}", timeout=10) as stream:
        messages = data_events(stream.iter_lines())
        assert '"0"' in counted(victim.open(next(messages)))  # attached: the page, sealed

        def ticks_on_stream() -> list[dict]:
            victim.open(user.http.post(url, json=victim.seal(page.click("ticks"))).json())
            return [victim.open(next(messages)) for _ in range(3)]

        yield ticks_on_stream, [proof]


@pytest.mark.parametrize("victim_transport", ["events", "socket"])
def test_an_event_stream_opened_in_a_pages_name_does_not_take_its_pushes(
    parano_user, victim_transport
):
    """The attack: with the victim's cookie, page id and instance (all read on the wire),
    open an event stream of that page: without a proof, with a made-up one, with the one
    read in the victim's own stream URL. Before, it took the page's pushes (sealed, so
    unreadable, but the victim got none of them). Now it gets "reload" and ends, and the
    victim's connection keeps its pushes."""
    server, user, page = parano_user
    attacker = same_cookie(user)
    stolen = f"{page.endpoint}?i={page.instance}&p=victim&r=1"
    made_up = quote(f"7.{base64.b64encode(os.urandom(32)).decode()}", safe="")
    with victim_with_pushes(user, page, victim_transport) as (ticks, proofs_read):
        for proof in ("", made_up, *proofs_read):
            with attacker.http.stream("GET", f"{stolen}&e={proof}", timeout=10) as stream:
                assert until_ended(stream) == ([{"reload": True}], True)
        assert ">300<" in counted(ticks()[-1])
    refused = 2 + len(proofs_read)
    assert server.wait_for_log("refused a push connection for a parano page", refused) == refused
    attacker.close()


@pytest.mark.parametrize("victim_transport", ["events", "socket"])
def test_a_socket_without_keys_does_not_take_a_pages_pushes(parano_user, victim_transport):
    """The same with a WebSocket opened without the key exchange (no s=1): it used to be
    attached as the page's one push connection. Now it is refused and closed."""
    _, user, page = parano_user
    attacker = same_cookie(user)
    with victim_with_pushes(user, page, victim_transport) as (ticks, _):
        for extra in ("&p=victim", "&p=victim&r=1"):
            with attacker.websocket(page, extra=extra) as stolen:
                assert until_closed(stolen) == ([{"reload": True}], 1008)
        assert ">300<" in counted(ticks()[-1])
    attacker.close()


def test_event_streams_are_proven_once_each_with_the_current_keys():
    from htagweb.app.parano import KeysLost, KeysRefused, PageKeys

    def idle(page: str) -> bool:
        return False

    keys = PageKeys(limit=4)
    first = Client()
    first.agree(keys.agree("p", first.hello, idle).hello)
    with pytest.raises(KeysRefused):
        keys.open_stream("p", None)  # a socket without a key exchange
    opened = first.stream_proof()
    keys.open_stream("p", opened)
    for refused in (opened, "0" + opened, "not a number", "2.not base64!", "2." + opened[2:]):
        with pytest.raises(KeysRefused):
            keys.open_stream("p", refused)  # the same n again, or no proof of the next one
    first.streams = 4  # n need not follow: it only grows (streams that never arrived)
    keys.open_stream("p", first.stream_proof())
    second = Client(prover=first)
    second.agree(keys.agree("p", second.hello, idle).hello)
    with pytest.raises(KeysRefused):  # proven with keys the page no longer uses
        keys.open_stream("p", first.stream_proof())
    keys.open_stream("p", second.stream_proof())
    with pytest.raises(KeysLost):
        keys.open_stream("q", second.stream_proof())
