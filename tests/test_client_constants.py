"""The values the browser's scripts share with the Python side are equal on both sides.

client.js and parano.js name each of them once, near their top (`const NAME = value;`;
client.js in its first piece, htagweb/static/client/shared.js). They are read here as text,
as htagweb serves them (client.js put together from its pieces by htagweb/web/assets.py),
and compared with Python's values: the close codes of htagweb/web/replies.py, the labels
and channels of htagweb/app/parano.py, and the words and query parameters the web modules
read. A shared value written anywhere else in a script, rather than through its name, in
any piece, fails too.
"""

from __future__ import annotations

import base64
import inspect
import json
import re

import pytest

from htagweb.app import parano
from htagweb.web import assets, events, http, replies, websocket

CONSTANT = re.compile(r'^ *const ([A-Z][A-Z0-9_]*) = ("(?:[^"\\\n]|\\.)*"|-?\d+);', re.M)
# The web modules' source: for values they keep as literals (heartbeat words, parameters).
WEB_SOURCE = "\n".join(inspect.getsource(module) for module in (events, http, replies, websocket))


def script(name: str) -> str:
    """The script served as /_htagweb/<name>."""
    return assets.ASSETS[name].body.decode("utf-8")


def constants(text: str) -> dict[str, object]:
    """The constants a script defines as a number or a string literal, by name."""
    return {name: json.loads(value) for name, value in CONSTANT.findall(text)}


def literal(value: object) -> str:
    return json.dumps(value)


def assert_named_once(text: str, defined: dict[str, object], value: object) -> None:
    """`value` is written in the script only where constants are defined as it."""
    written = len(re.findall(rf"(?<![\w.]){re.escape(literal(value))}(?![\w.])", text))
    definitions = sum(1 for v in defined.values() if v == value)
    assert written == definitions, f"{literal(value)} written {written} times, not by its name"


CLIENT = constants(script("client.js"))
PARANO = constants(script("parano.js"))


def test_the_scripts_define_their_shared_constants():
    assert {"CLOSE_APP_GONE", "CLOSE_TOO_BIG", "SOCKET_PING", "SOCKET_PONG"} <= CLIENT.keys()
    assert {"STREAM_PING", "STREAM_ENDED", "PARAM_INSTANCE", "PARAM_PAGE"} <= CLIENT.keys()
    shared = {"INFO", "PROOF_LABEL", "STREAM_LABEL"} | {
        f"CHANNEL_{name}" for name in ("INTERACTION", "ANSWER", "PUSH")
    }
    assert shared <= PARANO.keys()


def test_websocket_close_codes_are_pythons():
    """Each CLOSE_X of client.js is replies.WS_CLOSE_X; each code is written once."""
    codes = {name: value for name, value in CLIENT.items() if name.startswith("CLOSE_")}
    assert codes
    for name, value in codes.items():
        assert value == getattr(replies, "WS_" + name), name
    text = script("client.js")
    python_codes = [v for k, v in vars(replies).items() if k.startswith("WS_CLOSE_")]
    assert len(python_codes) == 3
    for value in python_codes:  # a code used without its name, or a name out of step
        assert_named_once(text, CLIENT, value)


def test_parano_labels_and_channels_are_pythons():
    text = script("parano.js")
    for name in ("INFO", "PROOF_LABEL", "STREAM_LABEL"):
        python = getattr(parano, name).decode()
        assert PARANO[name] == python, name
        assert_named_once(text, PARANO, python)
    for name in ("CHANNEL_INTERACTION", "CHANNEL_ANSWER", "CHANNEL_PUSH"):
        assert PARANO[name] == getattr(parano, name), name


def test_parano_channel_names_are_those_the_app_process_seals_with():
    """A sealed message's "ch" names its channel: parano.js opens it with that nonce."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    match = re.search(r"const CHANNEL_OF = \{([^}]*)\};", script("parano.js"))
    assert match, "parano.js names its channels in CHANNEL_OF"
    names = dict(re.findall(r"(\w+): (CHANNEL_[A-Z]+)", match.group(1)))
    browser = ec.generate_private_key(ec.SECP256R1()).public_key()
    raw = browser.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    cipher = parano.PageCipher(base64.b64encode(raw).decode())
    assert names == {
        cipher.seal_answer({}, b"{}")["ch"]: "CHANNEL_ANSWER",
        cipher.seal_push(b"{}")["ch"]: "CHANNEL_PUSH",
    }


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("SOCKET_PING", r'text == "{}"'),  # websocket.py: the page's heartbeat
        ("SOCKET_PONG", r'send_text\("{}"\)'),  # ... and its answer
        ("STREAM_PING", r"event: {}\\n"),  # events.py: a sign of life
        ("STREAM_ENDED", r"event: {}\\n"),  # ... and the app's end
    ],
)
def test_heartbeat_and_event_names_are_those_the_server_sends(name, pattern):
    value = CLIENT[name]
    assert re.search(pattern.format(re.escape(value)), WEB_SOURCE), (name, value)
    assert_named_once(script("client.js"), CLIENT, value)


def test_query_parameters_are_those_the_server_reads():
    params = {name: value for name, value in CLIENT.items() if name.startswith("PARAM_")}
    assert len(params) == 5
    for name, value in params.items():
        assert f'.get("{value}")' in WEB_SOURCE, (name, value)
    text = script("client.js")
    for value in params.values():  # set only through its name
        assert not re.search(rf"searchParams\.set\({re.escape(literal(value))}", text), value
