"""Parano mode: interactions sealed between the browser and the user's app process.

For each connection (a WebSocket, or an HTTP page) the browser and the app process
agree on keys by ECDH P-256 with fresh key pairs; HKDF-SHA256 turns the shared secret
into one AES-256-GCM key per direction. Workers and proxies only see sealed messages.

Every sealed message carries a counter that is part of its nonce:

    nonce = channel (4 bytes, big-endian) + counter (8 bytes, big-endian)

with channel 1 for interactions, 2 for their answers and 3 for pushes (tag.update()).
Each side accepts on each channel only the counter that follows the last one: replays
and reordering fail. The one exception is the browser sending its last interaction
again, byte for byte, after losing the answer: it gets the same sealed answer back.

On the wire, a sealed message is {"c": counter, "d": base64 ciphertext}; the server
adds "ch": "r" (an answer) or "p" (a push). The handshake is {"hello": base64 public
key} each way (the uncompressed P-256 point).
"""

from __future__ import annotations

import base64
import binascii
import collections
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

INFO = b"htagweb parano v1"
CHANNEL_INTERACTION = 1
CHANNEL_ANSWER = 2
CHANNEL_PUSH = 3
MAX_COUNTER = 2**53  # exact in JavaScript numbers


class SealError(ValueError):
    """A sealed message that cannot be accepted (forged, replayed, out of order, malformed)."""


class CounterError(SealError):
    """Not the counter due: a replay, or a page whose counters went out of step (it agrees
    on new keys when told so)."""


def _nonce(channel: int, counter: int) -> bytes:
    return channel.to_bytes(4, "big") + counter.to_bytes(8, "big")


class PageCipher:
    """The keys and counters of one connection, on the app process's side."""

    def __init__(self, client_hello: str) -> None:
        try:
            client_raw = base64.b64decode(client_hello, validate=True)
            client_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), client_raw)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise SealError(f"not a P-256 public key: {exc}") from None
        private = ec.generate_private_key(ec.SECP256R1())
        server_raw = private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        shared = private.exchange(ec.ECDH(), client_key)
        keys = HKDF(
            algorithm=hashes.SHA256(), length=64, salt=client_raw + server_raw, info=INFO
        ).derive(shared)
        self.hello = base64.b64encode(server_raw).decode()
        self._from_client = AESGCM(keys[:32])
        self._to_client = AESGCM(keys[32:])
        self._received = 0  # the last interaction counter accepted
        self._sent = {CHANNEL_ANSWER: 0, CHANNEL_PUSH: 0}
        self._last: tuple[Any, dict[str, Any]] | None = None  # (sealed interaction, answer)

    def open(self, sealed: Any) -> bytes:
        """The plaintext of an interaction; SealError if it is not the next one."""
        if not isinstance(sealed, dict):
            raise SealError("a sealed message is an object")
        counter, data = sealed.get("c"), sealed.get("d")
        if type(counter) is not int or not isinstance(data, str):
            raise SealError("a sealed message has an integer 'c' and a string 'd'")
        if counter != self._received + 1:
            raise CounterError(f"counter {counter} where {self._received + 1} was due")
        try:
            plaintext = self._from_client.decrypt(
                _nonce(CHANNEL_INTERACTION, counter), base64.b64decode(data, validate=True), None
            )
        except (InvalidTag, ValueError, binascii.Error):
            raise SealError("the message was not sealed with this connection's key") from None
        self._received = counter
        return plaintext

    def answer_again(self, sealed: Any) -> dict[str, Any] | None:
        """The answer already sent, if `sealed` is the last interaction sent again as is."""
        if self._last is not None and self._last[0] == sealed:
            return self._last[1]
        return None

    def seal_answer(self, sealed_interaction: Any, plaintext: bytes) -> dict[str, Any]:
        answer = self._seal(CHANNEL_ANSWER, "r", plaintext)
        self._last = (sealed_interaction, answer)
        return answer

    def seal_push(self, plaintext: bytes) -> dict[str, Any]:
        return self._seal(CHANNEL_PUSH, "p", plaintext)

    def _seal(self, channel: int, name: str, plaintext: bytes) -> dict[str, Any]:
        counter = self._sent[channel] + 1
        if counter >= MAX_COUNTER:
            raise SealError("counter exhausted: the page must reconnect")
        self._sent[channel] = counter
        data = self._to_client.encrypt(_nonce(channel, counter), plaintext, None)
        return {"c": counter, "d": base64.b64encode(data).decode(), "ch": name}


class PageKeys:
    """The keys of each page one app process serves, for at most `limit` pages.

    A page agrees on new keys for each WebSocket it opens, and once for HTTP. Past the
    limit the least recently keyed page without a live connection is forgotten first.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ciphers: collections.OrderedDict[str, PageCipher] = collections.OrderedDict()

    def agree(self, page: str, client_hello: str, connected: Callable[[str], bool]) -> PageCipher:
        cipher = PageCipher(client_hello)  # SealError for a bad key
        self._ciphers[page] = cipher
        self._ciphers.move_to_end(page)
        while len(self._ciphers) > self.limit:
            idle = next((p for p in self._ciphers if not connected(p)), None)
            self._ciphers.pop(idle if idle is not None else next(iter(self._ciphers)))
        return cipher

    def get(self, page: str | None) -> PageCipher | None:
        return self._ciphers.get(page) if page else None
