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

Keys belong to the page that agreed them. The page id travels in URLs, so anyone who
reads the traffic knows it: a page that already has keys agrees on new ones (a socket
that reconnects, counters out of step, the fall back to HTTP) only by proving that it
holds its current keys. Its hello is then "key.proof", where

    proof = HMAC-SHA256(proof key of the current keys, PROOF_LABEL + the new public key)

and the proof key is HKDF's third 32 bytes, after the two AES keys. No counter takes part,
so a page whose counters went out of step can still prove. A page whose answer to such a
hello was lost proves again with the same keys (the app process accepts the keys that
proved the current ones too), but each public key is agreed once: a hello read on the way
and sent again is refused.

Pushes go to one connection per page, so that connection is proven too: a socket by its
key exchange, an HTTP page's event stream by "e=n.proof" in its URL, where n numbers the
streams opened with the current keys (1, 2, ...) and

    proof = HMAC-SHA256(proof key, STREAM_LABEL + n in decimal)

The app process keeps each page's last n and takes only a greater one: a stream's URL read
on the way and opened again is refused, and the page keeps its pushes.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

INFO = b"htagweb parano v1"
PROOF_LABEL = b"htagweb parano v1 proof"
STREAM_LABEL = b"htagweb parano v1 stream"
STREAM_NUMBER = re.compile(r"[1-9][0-9]{0,15}")  # n of an event stream's proof, in decimal
CHANNEL_INTERACTION = 1
CHANNEL_ANSWER = 2
CHANNEL_PUSH = 3
MAX_COUNTER = 2**53  # exact in JavaScript numbers


class SealError(ValueError):
    """A sealed message that cannot be accepted (forged, replayed, out of order, malformed)."""


class CounterError(SealError):
    """Not the counter due: a replay, or a page whose counters went out of step (it agrees
    on new keys when told so)."""


class KeysRefused(SealError):
    """A key exchange for a page that has keys, without the proof that it holds them."""


class KeysLost(SealError):
    """A key exchange proven with keys this process has forgotten (past its limit)."""


def _nonce(channel: int, counter: int) -> bytes:
    return channel.to_bytes(4, "big") + counter.to_bytes(8, "big")


def _public_key(encoded: str) -> tuple[bytes, ec.EllipticCurvePublicKey]:
    """A P-256 public key sent in base64: its bytes and the key; SealError if it is not one."""
    try:
        raw = base64.b64decode(encoded, validate=True)
        return raw, ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SealError(f"not a P-256 public key: {exc}") from None


class PageCipher:
    """The keys and counters of one connection, on the app process's side."""

    def __init__(self, client_hello: str) -> None:
        client_raw, client_key = _public_key(client_hello)
        private = ec.generate_private_key(ec.SECP256R1())
        server_raw = private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        shared = private.exchange(ec.ECDH(), client_key)
        keys = HKDF(
            algorithm=hashes.SHA256(), length=96, salt=client_raw + server_raw, info=INFO
        ).derive(shared)
        self.hello = base64.b64encode(server_raw).decode()
        self.client_key = client_raw
        self._from_client = AESGCM(keys[:32])
        self._to_client = AESGCM(keys[32:64])
        self._proof_key = keys[64:]
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

    def proves(self, client_key: bytes, proof: bytes) -> bool:
        """Whether `proof` shows that the page holding these keys sent `client_key`."""
        return self._signed(PROOF_LABEL + client_key, proof)

    def proves_stream(self, number: int, proof: bytes) -> bool:
        """Whether `proof` shows that the page holding these keys opened stream `number`."""
        return self._signed(STREAM_LABEL + str(number).encode(), proof)

    def _signed(self, data: bytes, proof: bytes) -> bool:
        expected = hmac.digest(self._proof_key, data, hashlib.sha256)
        return hmac.compare_digest(expected, proof)

    def _seal(self, channel: int, name: str, plaintext: bytes) -> dict[str, Any]:
        counter = self._sent[channel] + 1
        if counter >= MAX_COUNTER:
            raise SealError("counter exhausted: the page must reconnect")
        self._sent[channel] = counter
        data = self._to_client.encrypt(_nonce(channel, counter), plaintext, None)
        return {"c": counter, "d": base64.b64encode(data).decode(), "ch": name}


class _Page:
    """One page's keys: those in use, those that proved them, the last stream they proved."""

    __slots__ = ("cipher", "proven", "prover", "streams")

    def __init__(self, cipher: PageCipher) -> None:
        self.cipher = cipher
        self.streams = 0  # the last event stream `cipher` proved (its n)
        # The keys that proved `cipher`: a page that never got the answer to its hello
        # still holds them, and proves with them again.
        self.prover: PageCipher | None = None
        self.proven: set[bytes] = set()  # the public keys `prover` proved: agreed once each

    def rekey(self, client_hello: str, proof: str) -> None:
        """New keys, if the hello is proven with this page's keys; KeysRefused if not."""
        client_key = _public_key(client_hello)[0]
        try:
            mac = base64.b64decode(proof, validate=True)
        except (ValueError, binascii.Error):
            raise KeysRefused("a proof that is not base64") from None
        if client_key == self.cipher.client_key or client_key in self.proven:
            raise KeysRefused("a key exchange sent again")
        if self.cipher.proves(client_key, mac):
            self.prover, self.proven = self.cipher, set()
        elif self.prover is None or not self.prover.proves(client_key, mac):
            raise KeysRefused("not proven with this page's keys")
        self.cipher = PageCipher(client_hello)
        self.streams = 0
        self.proven.add(client_key)

    def open_stream(self, proof: str) -> None:
        """An event stream of this page, if `proof` ("n.mac") is proven with its keys and
        n is greater than any they proved before; KeysRefused if not."""
        number, _, mac = proof.partition(".")
        if not STREAM_NUMBER.fullmatch(number):
            raise KeysRefused("an event stream's proof without its number")
        try:
            signature = base64.b64decode(mac, validate=True)
        except (ValueError, binascii.Error):
            raise KeysRefused("a proof that is not base64") from None
        n = int(number)
        if n <= self.streams:
            raise KeysRefused("an event stream's proof sent again")
        if not self.cipher.proves_stream(n, signature):
            raise KeysRefused("an event stream not proven with this page's keys")
        self.streams = n


class PageKeys:
    """The keys of each page one app process serves, for at most `limit` pages.

    A page agrees on new keys for each WebSocket it opens, and once for HTTP (again after
    its counters went out of step). Only its first key exchange goes without proof: later
    ones must prove that they come from the page holding the keys (see the module's
    docstring), lest someone who read the page id take them over. Past the limit the
    least recently keyed page without a live connection is forgotten first; its proven
    hellos then raise KeysLost (the page must load again).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pages: collections.OrderedDict[str, _Page] = collections.OrderedDict()

    def agree(self, page: str, client_hello: str, connected: Callable[[str], bool]) -> PageCipher:
        """New keys for `page`: SealError for a bad key, KeysRefused for a page that has
        keys and a hello not proven with them, KeysLost for a proof nothing can check."""
        key, proven, proof = client_hello.partition(".")
        known = self._pages.get(page)
        if known is not None:
            known.rekey(key, proof)
        elif proven:
            _public_key(key)  # a bad key is a bad key, whatever else
            raise KeysLost("proven with keys this process no longer has")
        else:
            known = self._pages[page] = _Page(PageCipher(key))
        self._pages.move_to_end(page)
        while len(self._pages) > self.limit:
            idle = next((p for p in self._pages if p != page and not connected(p)), None)
            self._pages.pop(idle if idle is not None else next(iter(self._pages)))
        return known.cipher

    def open_stream(self, page: str | None, proof: Any) -> None:
        """An event stream of `page` (see the module's docstring): KeysRefused if it is not
        proven, KeysLost if the page has no keys here (forgotten, or never agreed)."""
        known = self._pages.get(page) if page else None
        if known is None:
            raise KeysLost("a push connection of a page without keys")
        if not isinstance(proof, str):
            raise KeysRefused("a push connection without a key exchange or a proof")
        known.open_stream(proof)

    def get(self, page: str | None) -> PageCipher | None:
        known = self._pages.get(page) if page else None
        return known.cipher if known is not None else None
