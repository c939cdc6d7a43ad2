"""Parano mode: sealed interactions, answers and pushes, seen from a client in Python.

The client below follows htagweb/parano.py's protocol with the cryptography package,
as the browser client does with WebCrypto (tests/test_browser.py runs that one).
"""

from __future__ import annotations

import base64
import json
import sys

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from support import User
from websockets.exceptions import ConnectionClosed

from htagweb.parano import PageCipher, SealError

COUNTER = [sys.executable, "-m", "uvicorn", "counter_server:app", "--port", "{port}"]
PARANO = {"COUNTER_PARANO": "1", "COUNTER_RATE": "0"}


def nonce(channel: int, counter: int) -> bytes:
    return channel.to_bytes(4, "big") + counter.to_bytes(8, "big")


class Client:
    """One connection's keys and counters, on the page's side."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.raw = self.private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        self.hello = base64.b64encode(self.raw).decode()
        self.sent = 0
        self.received = {"r": 0, "p": 0}

    def agree(self, server_hello: str) -> None:
        server_raw = base64.b64decode(server_hello)
        server_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), server_raw)
        shared = self.private.exchange(ec.ECDH(), server_key)
        keys = HKDF(
            algorithm=hashes.SHA256(), length=64, salt=self.raw + server_raw,
            info=b"htagweb parano v1",
        ).derive(shared)  # fmt: skip
        self.to_server, self.from_server = AESGCM(keys[:32]), AESGCM(keys[32:])

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
    with user.websocket(page) as ws:  # a socket without the key exchange
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


def test_a_page_without_keys_is_asked_to_agree_again(parano_user):
    _, user, page = parano_user
    client, url = http_session(user, page)
    response = user.http.post(url.replace("tab1", "other"), json=client.seal(page.click("inc")))
    assert response.status_code == 409 and response.json() == {"rekey": True}


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
