"""One suite, run against every session store (memory, SQLite file, real redis-server)."""

from __future__ import annotations

import collections
import datetime
import decimal
import json
import math
import os
import sqlite3
import stat
import threading
import time
import uuid
import zoneinfo

import pytest

from htagweb.sessions import (
    MemoryStore,
    SessionStore,
    SessionTooLarge,
    SQLiteStore,
    codec,
    open_store,
)
from htagweb.sessions.base import encode_value, new_token
from htagweb.sessions.views import AppSession, RequestSession


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request, tmp_path):
    """Build stores of one kind; every call opens another handle on the same data."""
    kind = request.param
    made: list[SessionStore] = []
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    def make(**options) -> SessionStore:
        if kind == "memory":
            store = made[0] if made else MemoryStore(**options)
        elif kind == "sqlite":
            store = SQLiteStore(tmp_path / "sessions.sqlite", **options)
        else:
            from htagweb.sessions.redis import RedisStore

            store = RedisStore(request.getfixturevalue("redis_url"), prefix=prefix, **options)
        made.append(store)
        return store

    make.kind = kind
    yield make
    for store in made:
        store.close()


def test_tokens_reach_their_session_and_nothing_else(make_store):
    store = make_store()
    token = new_token()
    session_id = store.create(token)
    assert store.resolve(token) == session_id
    assert store.resolve(new_token()) is None
    assert store.create(new_token()) != session_id


def test_values_round_trip_per_key(make_store):
    store, other_handle = make_store(), make_store()
    session_id = store.create(new_token())
    store.write(session_id, {"a": encode_value("a", {"x": [1, 2]}), "b": '"é"'}, set())
    assert {k: json.loads(v) for k, v in other_handle.load(session_id).items()} == {
        "a": {"x": [1, 2]},
        "b": "é",
    }
    store.write(session_id, {}, {"a"})
    assert other_handle.load(session_id) == {"b": '"é"'}


def test_concurrent_writers_of_different_keys_both_survive(make_store):
    first, second = make_store(), make_store()
    session_id = first.create(new_token())

    def writer(store, key):
        for i in range(30):
            store.write(session_id, {key: str(i)}, set())

    pairs = ((first, "x"), (second, "y"))
    threads = [threading.Thread(target=writer, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert first.load(session_id) == {"x": "29", "y": "29"}


def test_rotation_moves_the_session_and_kills_the_old_token_and_id(make_store):
    store = make_store()
    old, new = new_token(), new_token()
    old_id = store.create(old)
    store.write(old_id, {"user": '"alice"'}, set())
    session_id = store.rotate(old, new)
    assert session_id is not None and session_id != old_id
    assert store.resolve(old) is None
    assert store.resolve(new) == session_id
    assert store.load(session_id) == {"user": '"alice"'}
    assert store.load(old_id) == {}  # a request that read the old id a moment before
    assert store.rotate(old, new_token()) is None  # a dead token rotates nothing
    bare, renewed = new_token(), new_token()
    store.create(bare)  # a session with no data yet moves too
    moved = store.rotate(bare, renewed)
    assert moved is not None and store.resolve(renewed) == moved and store.load(moved) == {}


def test_maximum_size_is_enforced_and_nothing_is_lost(make_store):
    store = make_store(max_bytes=100)
    session_id = store.create(new_token())
    store.write(session_id, {"small": '"ok"'}, set())
    with pytest.raises(SessionTooLarge, match="maximum of 100"):
        store.write(session_id, {"big": json.dumps("x" * 200)}, set())
    assert store.load(session_id) == {"small": '"ok"'}  # the refused write changed nothing


def test_the_size_follows_every_write_delete_and_rotation(make_store):
    """Stores keep a session's size as writes go (a write reads only the keys it replaces):
    after any mix of them, what fits and what does not is what the data itself says."""
    store = make_store(max_bytes=60)
    token = new_token()
    session_id = store.create(token)
    store.write(session_id, {"a": '"' + "x" * 18 + '"', "b": "1", "é": '"é"'}, set())  # 20+2+6
    store.write(session_id, {"a": '"' + "x" * 8 + '"'}, {"b"})  # a: 11, b gone, é: 6
    store.write(session_id, {"b": "22"}, set())  # b: 3
    moved = store.rotate(token, new_token())
    assert moved is not None
    stored = store.load(moved)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in stored.items())
    assert size == 20
    room = 60 - size - len("c")  # bytes left for a new key's text
    store.write(moved, {"c": "y" * room}, set())  # exactly at the maximum: accepted
    with pytest.raises(SessionTooLarge, match="would hold 61 bytes"):
        store.write(moved, {"d": ""}, set())
    assert store.load(moved) == {**stored, "c": "y" * room}


def test_a_sqlite_file_of_the_previous_schema_is_brought_up_to_date(tmp_path):
    path = tmp_path / "sessions.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE sessions (id TEXT PRIMARY KEY, seen REAL NOT NULL);
        CREATE TABLE tokens (token TEXT PRIMARY KEY, session_id TEXT NOT NULL);
        CREATE TABLE data (session_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                           PRIMARY KEY (session_id, key)) WITHOUT ROWID;
        INSERT INTO sessions VALUES ('s1', 1e12);
        INSERT INTO tokens VALUES ('t1', 's1');
        INSERT INTO data VALUES ('s1', 'kept', '"' || hex(zeroblob(20)) || '"');
        PRAGMA user_version = 1;
        """
    )
    old.close()
    store = SQLiteStore(path, max_bytes=100)
    try:
        assert store.resolve("t1") == "s1" and len(store.load("s1")["kept"]) == 42
        with pytest.raises(SessionTooLarge, match="would hold 101 bytes"):  # 46 counted
            store.write("s1", {"more": "z" * 51}, set())
        store.write("s1", {"more": "z" * 50}, set())
    finally:
        store.close()


def test_idle_sessions_expire_and_their_data_is_deleted(make_store):
    store = make_store(idle_expiry=1)
    token = new_token()
    session_id = store.create(token)
    store.write(session_id, {"k": "1"}, set())
    time.sleep(2.1)  # the expiry itself is a wall-clock duration: nothing to wait on
    store.purge_expired()
    assert store.resolve(token) is None
    assert store.load(session_id) == {}


def test_delete_forgets_data_and_tokens(make_store):
    store = make_store()
    token = new_token()
    session_id = store.create(token)
    store.write(session_id, {"k": "1"}, set())
    store.delete(session_id)
    assert store.resolve(token) is None and store.load(session_id) == {}


def test_describe_reopens_the_same_store_elsewhere(make_store):
    store = make_store()
    session_id = store.create(new_token())
    store.write(session_id, {"k": "1"}, set())
    reopened = open_store(store.describe())
    try:
        expected = {} if make_store.kind == "memory" else {"k": "1"}  # memory is per process
        assert reopened.load(session_id) == expected
    finally:
        reopened.close()


class Point:
    pass


class OddZone(datetime.tzinfo):
    """A time zone neither fixed nor from the IANA database: not kept."""

    def utcoffset(self, dt):
        return datetime.timedelta(hours=1)

    def dst(self, dt):
        return datetime.timedelta(0)


ROUND_TRIPS = [
    (1, "a", (2.5, None)),
    {1, "b", (3, 4)},
    frozenset({b"x"}),
    datetime.datetime(2026, 12, 1, 9, 30, 5, 123456),
    datetime.datetime(2026, 3, 29, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
    datetime.date(2026, 12, 1),
    datetime.time(23, 59, 59, 999999),
    decimal.Decimal("1.10"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"\x00\xffbytes",
    float("inf"),
    {1: "int key", (1, 2): "tuple key", "s": {"t": [(), set()]}},
    {" set": "a dict shaped like a tag"},
    [[datetime.date(2026, 1, 1), decimal.Decimal("-0")], {"deep": ({"x": b""},)}],
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: type(v).__name__)
def test_common_python_values_round_trip_exactly(value):
    back = codec.loads(encode_value("where", value))
    assert back == value and _types(back) == _types(value)


def test_nan_round_trips():
    assert math.isnan(codec.loads(encode_value("where", float("nan"))))


def _types(value):
    """The type of every value inside `value`, in order: equal values of other types differ."""
    if isinstance(value, dict):
        return [dict, *[(_types(k), _types(v)) for k, v in value.items()]]
    if isinstance(value, (list, tuple)):
        return [type(value), *map(_types, value)]
    if isinstance(value, (set, frozenset)):
        return [type(value), *sorted(map(repr, map(_types, value)))]
    return type(value)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (object(), "builtins.object"),
        (Point(), "Point"),
        ({"nested": [Point()]}, "Point"),
        (collections.OrderedDict(a=1), "OrderedDict"),
        (collections.namedtuple("Pair", "a b")(1, 2), "Pair"),
        (datetime.datetime(2026, 1, 1, tzinfo=OddZone()), "time zone"),
    ],
)
def test_other_values_are_refused_naming_the_key_and_the_type(value, named):
    with pytest.raises(TypeError, match=rf"session\['where'\] holds .*{named}.*Store the"):
        encode_value("where", value)


def test_reading_a_stored_value_runs_no_code():
    text = '{" tuple": [{"__reduce__": "os.system"}, {" bytes": "bHM="}]}'
    assert codec.loads(text) == ({"__reduce__": "os.system"}, b"ls")
    with pytest.raises((ValueError, TypeError)):
        codec.loads('{" decimal": {"x": 1}}')  # a malformed tag is an error, not a call


def test_sqlite_file_is_private_and_survives_reopening(tmp_path):
    path = tmp_path / "state" / "sessions.sqlite"
    store = SQLiteStore(path)
    token = new_token()
    session_id = store.create(token)
    store.write(session_id, {"k": "1"}, set())
    store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = SQLiteStore(path)
    assert again.resolve(token) == session_id and again.load(session_id) == {"k": "1"}
    again.close()


def test_store_options_are_checked():
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryStore(max_bytes=0)
    with pytest.raises(ValueError, match="idle_expiry"):
        MemoryStore(idle_expiry=0)


def test_a_value_the_app_held_does_not_undo_what_a_route_wrote_since(make_store):
    store = make_store()
    session_id = store.create(new_token())
    app = AppSession(store, session_id)
    app["cart"] = ["a"]
    held = app["cart"]  # kept by the app across interactions
    route = RequestSession(store, session_id)
    route.preload()
    route["cart"] = []  # the user emptied the cart through a route
    route.save()
    app.refresh()  # the app's next interaction, which does not read "cart" again...
    held.append("b")  # ...but changes the list it held
    app.save_changes()
    assert json.loads(store.load(session_id)["cart"]) == []  # the route's write stands
    assert app["cart"] == []  # and the app reads it next


def test_values_any_str_can_hold_and_huge_ints_are_kept_or_refused_clearly(make_store):
    store = make_store()
    session_id = store.create(new_token())
    app = AppSession(store, session_id)
    name = os.fsdecode(b"caf\xe9.txt")  # a file name os.listdir decoded: a lone surrogate
    app["names"] = [name, "é"]
    assert AppSession(store, session_id)["names"] == [name, "é"]
    with pytest.raises(TypeError, match=r"session\['big'\] holds a value JSON cannot write"):
        app["big"] = 10**5000


def test_a_stored_value_that_cannot_be_read_is_absent_and_can_be_replaced(make_store, caplog):
    store = make_store()
    session_id = store.create(new_token())
    unknown_zone = '{" datetime": ["2026-01-01T00:00:00", "No/Where", 0]}'
    store.write(session_id, {"when": unknown_zone}, set())
    app = AppSession(store, session_id)
    assert app.get("when") is None and "cannot be read" in caplog.text
    app["when"] = "later"
    route = RequestSession(store, session_id)
    assert route["when"] == "later"
    del route["when"]
    route.save()
    assert store.load(session_id) == {}


def test_keys_are_strings_in_every_store(make_store):
    store = make_store()
    session_id = store.create(new_token())
    store.write(session_id, {"1": "1"}, set())
    assert AppSession(store, session_id).get(1) is None
    assert RequestSession(store, session_id).get(1) is None


def test_a_size_kept_for_data_that_is_gone_is_not_counted(make_store):
    store = make_store(max_bytes=100)
    session_id = store.create(new_token())
    store.write(session_id, {"k": "x" * 90}, set())
    store.write(session_id, {}, {"k"})
    if make_store.kind == "redis":  # evicted by maxmemory, or deleted by hand
        store.write(session_id, {"k": "x" * 90}, set())
        store._redis().delete(store._data_key(session_id))
    store.write(session_id, {"other": "y" * 90}, set())  # fits: nothing else is stored


def test_writes_of_thousands_of_keys_at_once(make_store):
    store = make_store(max_bytes=10**7)
    session_id = store.create(new_token())
    many = {f"k{n}": str(n) for n in range(9000)}
    store.write(session_id, many, set())
    assert len(store.load(session_id)) == 9000
    assert store.load_keys(session_id, list(many)[:1500]) == dict(list(many.items())[:1500])
    store.write(session_id, {"last": "1"}, set(many))
    assert store.load(session_id) == {"last": "1"}


def test_the_previous_versions_code_still_works_on_the_file_and_sizes_are_recounted(tmp_path):
    path = tmp_path / "sessions.sqlite"
    store = SQLiteStore(path, max_bytes=100)
    session_id = store.create(new_token())
    store.write(session_id, {"a": "x" * 40}, set())
    store.close()
    older = sqlite3.connect(path)  # what the previous version's code runs during a deploy
    older.execute("PRAGMA user_version = 1")
    older.execute("INSERT INTO sessions VALUES ('s2', 1e12)")
    older.execute("INSERT OR REPLACE INTO data VALUES (?, 'a', ?)", (session_id, "x" * 90))
    older.commit()
    older.close()
    again = SQLiteStore(path, max_bytes=100)
    try:
        with pytest.raises(SessionTooLarge, match="would hold 102 bytes"):  # 91 recounted
            again.write(session_id, {"b": "y" * 10}, set())
        again.write(session_id, {"b": "y" * 8}, set())
    finally:
        again.close()
