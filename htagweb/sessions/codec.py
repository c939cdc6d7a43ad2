"""Session values as tagged JSON: JSON, plus the Python values desktop htag apps keep.

Desktop htag keeps a session in memory and htagweb 1.0 pickled it, so apps store
tuples, sets, dates and the like. A store holds text, and pickle would run code on
reading; here each such value becomes a JSON object with one key naming its type:

    (1, 2)                  {" tuple": [1, 2]}
    {1, 2}                  {" set": [1, 2]}              (frozenset: " frozenset")
    datetime(2026, 1, 2)    {" datetime": "2026-01-02T00:00:00"}   (and " date", " time")
    Decimal("1.10")         {" decimal": "1.10"}
    UUID(...)               {" uuid": "..."}
    b"..."                  {" bytes": "<base64>"}
    float("nan")            {" float": "nan"}               (and "inf", "-inf")
    {1: "a"}                {" dict": [[1, "a"]]}         (keys that are not all str)

The keys begin with a space, which no identifier has; a dict that happens to be shaped
like a tag is itself written as " dict" pairs, so every value comes back as it went in.
Reading only ever builds these types: nothing read from a store runs code. Any other
type raises TypeError, naming it and what to store instead.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

SUPPORTED = (
    "JSON values (dict, list, str, int, float, bool, None) and tuple, set, frozenset, "
    "datetime, date, time, Decimal, UUID and bytes, nested as you like"
)


class UnsupportedValue(TypeError):
    """A value that sessions cannot keep (see SUPPORTED)."""


def dumps(value: Any) -> str:
    """The tagged JSON text of `value`; UnsupportedValue for a type sessions cannot keep."""
    try:
        tagged = _tagged(value)
        text = json.dumps(tagged, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        raise UnsupportedValue("a value nested too deeply to store") from None
    except ValueError as exc:  # an int past Python's digit limit for text
        raise UnsupportedValue(f"a value JSON cannot write ({exc})") from None
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate (a file name os.listdir decoded): escaped
        text = json.dumps(tagged, separators=(",", ":"))
    return text


class UnreadableValue(ValueError):
    """Stored text that does not decode (written by something else, or a time zone that
    this machine does not know)."""


def loads(text: str) -> Any:
    """The value whose tagged JSON text is `text`; UnreadableValue if it does not decode."""
    try:
        return json.loads(text, object_hook=_untagged)
    except (ValueError, TypeError, KeyError, zoneinfo.ZoneInfoNotFoundError) as exc:
        raise UnreadableValue(f"{type(exc).__name__}: {exc}") from None


def _tagged(value: Any) -> Any:
    kind = type(value)
    if kind in (str, int, bool) or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else {" float": repr(value)}
    if kind is list:
        return [_tagged(item) for item in value]
    if kind is dict:
        if all(type(key) is str for key in value) and not _looks_tagged(value):
            return {key: _tagged(item) for key, item in value.items()}
        return {" dict": [[_tagged(key), _tagged(item)] for key, item in value.items()]}
    encode = _ENCODERS.get(kind)
    if encode is None:
        raise UnsupportedValue(f"a {kind.__module__}.{kind.__qualname__} value")
    name, encoded = encode(value)
    return {f" {name}": encoded}


def _looks_tagged(value: dict[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)) in _DECODERS


def _untagged(pairs: dict[str, Any]) -> Any:
    if len(pairs) == 1:
        ((key, encoded),) = pairs.items()
        decode = _DECODERS.get(key)
        if decode is not None:
            return decode(encoded)
    return pairs


def _collection(items: Any) -> list[Any]:
    """A set's items in a stable order, so that an unchanged set gives unchanged text."""
    tagged = [_tagged(item) for item in items]
    return sorted(tagged, key=lambda item: json.dumps(item, sort_keys=True, ensure_ascii=False))


def _with_zone(value: datetime.datetime | datetime.time) -> tuple[str, Any]:
    """A datetime or time with its zone: an IANA name kept by name, a fixed offset as is."""
    kind = "datetime" if isinstance(value, datetime.datetime) else "time"
    zone = value.tzinfo
    if zone is None or type(zone) is datetime.timezone:
        return kind, value.isoformat()
    if (
        isinstance(zone, zoneinfo.ZoneInfo)
        and zone.key is not None
        and isinstance(value, datetime.datetime)
    ):
        return kind, [value.replace(tzinfo=None).isoformat(), zone.key, value.fold]
    raise UnsupportedValue(f"a {kind} in the time zone {zone!r} (use zoneinfo or a fixed offset)")


def _from_zone(encoded: Any) -> datetime.datetime:
    if isinstance(encoded, str):
        return datetime.datetime.fromisoformat(encoded)
    text, key, fold = encoded
    naive = datetime.datetime.fromisoformat(text)
    return naive.replace(tzinfo=zoneinfo.ZoneInfo(key), fold=fold)


_ENCODERS: dict[type, Callable[[Any], tuple[str, Any]]] = {
    tuple: lambda value: ("tuple", [_tagged(item) for item in value]),
    set: lambda value: ("set", _collection(value)),
    frozenset: lambda value: ("frozenset", _collection(value)),
    datetime.datetime: _with_zone,
    datetime.date: lambda value: ("date", value.isoformat()),
    datetime.time: _with_zone,
    decimal.Decimal: lambda value: ("decimal", str(value)),
    uuid.UUID: lambda value: ("uuid", str(value)),
    bytes: lambda value: ("bytes", base64.b64encode(value).decode()),
}

_DECODERS: dict[str, Callable[[Any], Any]] = {
    " tuple": tuple,
    " set": set,
    " frozenset": frozenset,
    " datetime": _from_zone,
    " date": datetime.date.fromisoformat,
    " time": datetime.time.fromisoformat,
    " decimal": decimal.Decimal,
    " uuid": uuid.UUID,
    " bytes": base64.b64decode,
    " float": float,
    " dict": lambda pairs: {key: item for key, item in pairs},
}
