"""What a page sends: htag interactions, or parano mode's handshake and sealed messages.

An interaction is htag's {"id", "method", "args", "kargs", "event"}, plus "seq", the
number the page gives each interaction (see htagweb/static/client/). Workers check
plaintext ones; sealed ones are checked by the app process once opened.
"""

from __future__ import annotations

import json
from typing import Any

from .messages import InteractRequest

MAX_INTERACTION_BYTES = 1024 * 1024
MAX_SEQ = 2**53  # interaction numbers stay exact in JavaScript
# Lists and objects inside one another: far more than htag's events and arguments need,
# far less than what makes re-encoding a message hit Python's recursion limit.
MAX_NESTING = 64


class InvalidInteraction(ValueError):
    """A message that is not an interaction, a handshake or a sealed message."""

    def __init__(self, reason: str, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def parse_message(data: str | bytes, limit: int = MAX_INTERACTION_BYTES) -> dict[str, Any]:
    """One message from a page: {"hello": key}, {"sealed": {...}} or {"payload": {...}}."""
    message = _load(data, limit)
    if "hello" in message:
        if not isinstance(message["hello"], str) or len(message["hello"]) > 200:
            raise InvalidInteraction("'hello' must be a public key in base64")
        return {"hello": message["hello"]}
    if "d" in message:
        if type(message.get("c")) is not int or not isinstance(message["d"], str):
            raise InvalidInteraction("a sealed message has an integer 'c' and a string 'd'")
        return {"sealed": {"c": message["c"], "d": message["d"]}}
    return {"payload": check_interaction(message)}


def interact_request(
    parsed: dict[str, Any], instance: str | None = None, page: str | None = None
) -> InteractRequest:
    """The request carrying a parsed interaction (plaintext or sealed) to its app process."""
    request: InteractRequest = {"op": "interact"}
    if instance is not None or page is not None:
        request["instance"], request["page"] = instance, page
    if "sealed" in parsed:
        request["sealed"] = parsed["sealed"]
    else:
        request["payload"] = parsed["payload"]
    return request


def parse_interaction(data: str | bytes, limit: int = MAX_INTERACTION_BYTES) -> dict[str, Any]:
    """A plaintext interaction, checked (see check_interaction)."""
    return check_interaction(_load(data, limit))


def _load(data: str | bytes, limit: int) -> dict[str, Any]:
    if len(data) > limit:
        raise InvalidInteraction(f"over {limit} bytes", too_large=True)
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInteraction(f"not JSON: {exc}") from None
    except RecursionError:
        raise InvalidInteraction("nested too deeply") from None
    if not isinstance(message, dict):
        raise InvalidInteraction("an interaction is a JSON object")
    if _openers(data) > MAX_NESTING and _nesting_exceeds(message, MAX_NESTING):
        raise InvalidInteraction(f"nested deeper than {MAX_NESTING} levels")
    return message


def _openers(data: str | bytes) -> int:
    """How many "[" and "{" the text holds: nesting cannot go deeper (counted in C, so a
    click, far under the limit, skips the walk through its values)."""
    if isinstance(data, bytes):
        return data.count(b"[") + data.count(b"{")
    return data.count("[") + data.count("{")


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and objects nest deeper than `limit` in `value` (without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def check_interaction(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with htag's defaults filled in; InvalidInteraction if it is malformed."""
    if not isinstance(payload.get("id"), (int, str)) or isinstance(payload.get("id"), bool):
        raise InvalidInteraction("'id' must be an integer or a string")
    if not isinstance(payload.get("method"), (str, type(None))):  # None: a generator's next step
        raise InvalidInteraction("'method' must be a string")
    # htag sends null args and kargs for a generator's next step.
    if payload.get("args") is None:
        payload["args"] = []
    if payload.get("kargs") is None:
        payload["kargs"] = {}
    if not isinstance(payload["args"], list):
        raise InvalidInteraction("'args' must be a list")
    if not isinstance(payload["kargs"], dict):
        raise InvalidInteraction("'kargs' must be an object")
    if not isinstance(payload.setdefault("event", None), (dict, type(None))):
        raise InvalidInteraction("'event' must be an object")
    seq = payload.get("seq")
    if seq is not None and (type(seq) is not int or not 0 < seq < MAX_SEQ):
        raise InvalidInteraction("'seq' must be a positive integer")
    return payload
