"""Parano mode inside an app process: the keys of its pages, and sealed interactions.

The cryptography lives in htagweb.app.parano; this module applies it to the app
process's requests. It is imported only by app processes of parano pages, so that
others never load the cryptography package.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..wire.messages import AppReply
from ..wire.protocol import InvalidInteraction, parse_interaction
from .pages import PAGES_REMEMBERED
from .parano import CounterError, KeysLost, KeysRefused, PageCipher, PageKeys, SealError

logger = logging.getLogger(__name__)

REFUSED = "This action is not allowed."


class SealedPages:
    """The keys each page agreed with this process, and what they open and seal."""

    def __init__(self) -> None:
        self._keys = PageKeys(PAGES_REMEMBERED)

    def cipher_of(self, page: str | None) -> PageCipher | None:
        return self._keys.get(page)

    def handshake(self, page: Any, hello: Any, connected: set[str | None]) -> AppReply:
        """Agree on keys with a page. A page that has keys gets new ones only by proving it
        holds them (see htagweb.app.parano): anyone else is told to load a page of their
        own, and the page keeps its keys and its connection."""
        if not isinstance(page, str) or not isinstance(hello, str):
            return {"kind": "error", "error": "a handshake names its page and carries a public key"}
        try:
            cipher = self._keys.agree(page, hello, connected.__contains__)
        except KeysLost:
            return {"kind": "reload"}  # forgotten past the limit: a page load gets new keys
        except KeysRefused as exc:
            logger.warning("refused a key exchange for a page that has keys: %s", exc)
            return {"kind": "reload"}
        except SealError as exc:
            logger.warning("refused a handshake: %s", exc)
            return {"kind": "error", "error": "bad handshake"}
        return {"kind": "keys", "hello": cipher.hello}

    def stream_proven(self, page: str | None, proof: Any) -> bool:
        """Whether an event stream proves that the page holding the keys opened it (see
        htagweb.app.parano). A socket without a key exchange carries no proof."""
        try:
            self._keys.open_stream(page, proof)
        except KeysLost:
            return False  # forgotten past the limit: a page load gets new keys
        except KeysRefused as exc:
            logger.warning("refused a push connection for a parano page: %s", exc)
            return False
        return True

    async def interact(
        self,
        page: Any,
        sealed: dict[str, Any],
        apply: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> AppReply:
        """Open a sealed interaction, `apply` it, and seal its answer."""
        cipher = self._keys.get(page) if isinstance(page, str) else None
        if cipher is None:
            # Forgotten past the limit: new keys would need a proof nothing can check now,
            # so the page loads again (a new page, its own keys).
            return {"kind": "reload"}
        answered = cipher.answer_again(sealed)
        if answered is not None:
            return {"kind": "sealed", "sealed": answered}
        try:
            payload = parse_interaction(cipher.open(sealed))
        except CounterError as exc:
            # A replay, or a page that sealed a message the server never opened (refused
            # by a limit on the way): either way, only new keys can go on.
            logger.warning("refused a sealed interaction: %s", exc)
            return {"kind": "rekey"}
        except (SealError, InvalidInteraction) as exc:
            logger.warning("refused a sealed interaction: %s", exc)
            return {"kind": "actions", "actions": {"err": REFUSED}}
        actions = await apply(payload)
        return {
            "kind": "sealed",
            "sealed": cipher.seal_answer(sealed, json.dumps(actions).encode()),
        }

    def seal_push(self, page: str | None, actions: dict[str, Any]) -> dict[str, Any] | None:
        cipher = self._keys.get(page)
        return cipher.seal_push(json.dumps(actions).encode()) if cipher else None
