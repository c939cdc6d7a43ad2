"""RedisStore: sessions in Redis, shared by the workers and app processes of every host.

Keys, under a prefix (default "htagweb:"):
    t:<token>       -> session id        a cookie token
    k:<session id>  -> set of tokens     to forget them with the session
    d:<session id>  -> hash key -> JSON  the data
Each expires after idle_expiry without use: Redis deletes idle sessions itself.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any

from .base import TOUCH_EVERY, SessionStore, SessionTooLarge, new_session_id

try:
    import redis
except ImportError:  # pragma: no cover - the "redis" extra is not installed
    redis = None  # type: ignore[assignment]


class RedisStore(SessionStore):
    def __init__(
        self, url: str = "redis://localhost:6379/0", prefix: str = "htagweb:", **options: Any
    ) -> None:
        if redis is None:
            raise ImportError("RedisStore needs the redis package: pip install 'htagweb[redis]'")
        super().__init__(**options)
        self.url = url
        self.prefix = prefix
        self._client: Any = None
        self._pid = 0
        self._ttl = max(1, int(self.idle_expiry))
        self._touched: OrderedDict[str, float] = OrderedDict()  # token -> when its TTL was renewed
        self._lock = threading.Lock()  # web workers call a store from several threads

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():  # never share one across fork
                self._client = redis.Redis.from_url(self.url, decode_responses=True)
                self._pid = os.getpid()
            return self._client

    def _token_key(self, token: str) -> str:
        return f"{self.prefix}t:{token}"

    def _tokens_key(self, session_id: str) -> str:
        return f"{self.prefix}k:{session_id}"

    def _data_key(self, session_id: str) -> str:
        return f"{self.prefix}d:{session_id}"

    def create(self, token: str, session_id: str | None = None) -> str:
        session_id = session_id or new_session_id()
        pipe = self._redis().pipeline()
        pipe.set(self._token_key(token), session_id, ex=self._ttl)
        pipe.sadd(self._tokens_key(session_id), token)
        pipe.expire(self._tokens_key(session_id), self._ttl)
        pipe.execute()
        return session_id

    def resolve(self, token: str) -> str | None:
        client = self._redis()
        session_id = client.get(self._token_key(token))
        if session_id is None:
            return None
        if not self._due_for_renewal(token):
            return str(session_id)  # renewed a moment ago: spare Redis the round trip
        pipe = client.pipeline(transaction=False)
        pipe.expire(self._token_key(token), self._ttl)
        pipe.expire(self._tokens_key(session_id), self._ttl)
        pipe.expire(self._data_key(session_id), self._ttl)
        pipe.execute()
        return str(session_id)

    def _due_for_renewal(self, token: str) -> bool:
        """Whether the TTLs of `token`'s session should be renewed now (noted if so)."""
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(token, -TOUCH_EVERY) < min(TOUCH_EVERY, self._ttl / 4):
                return False
            self._touched[token] = now
            self._touched.move_to_end(token)
            while len(self._touched) > 10_000:
                self._touched.popitem(last=False)
        return True

    def rotate(self, old_token: str, new_token: str) -> str | None:
        client = self._redis()
        session_id = new_session_id()
        with client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._token_key(old_token))
                    old_id = pipe.get(self._token_key(old_token))
                    if old_id is None:
                        pipe.reset()
                        return None
                    old_data = self._data_key(old_id)
                    pipe.watch(old_data, self._tokens_key(old_id))
                    has_data = pipe.exists(old_data)
                    tokens = pipe.smembers(self._tokens_key(old_id))
                    old_tokens = [self._token_key(token) for token in tokens]
                    pipe.multi()
                    pipe.delete(self._token_key(old_token), self._tokens_key(old_id), *old_tokens)
                    if has_data:
                        pipe.rename(old_data, self._data_key(session_id))  # its TTL goes along
                    pipe.set(self._token_key(new_token), session_id, ex=self._ttl)
                    pipe.sadd(self._tokens_key(session_id), new_token)
                    pipe.expire(self._tokens_key(session_id), self._ttl)
                    pipe.execute()
                    return session_id
                except redis.WatchError:  # written meanwhile: move what is there now
                    continue

    def load(self, session_id: str) -> dict[str, str]:
        return dict(self._redis().hgetall(self._data_key(session_id)))

    def write(self, session_id: str, changed: dict[str, str], deleted: set[str]) -> None:
        client = self._redis()
        data_key = self._data_key(session_id)
        with client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(data_key)  # the size check and the write see the same data
                    self.check_size(dict(pipe.hgetall(data_key)), changed, deleted)
                    pipe.multi()
                    if deleted:
                        pipe.hdel(data_key, *deleted)
                    if changed:
                        pipe.hset(data_key, mapping=changed)
                    pipe.expire(data_key, self._ttl)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
                except SessionTooLarge:
                    pipe.reset()
                    raise

    def delete(self, session_id: str) -> None:
        client = self._redis()
        tokens = client.smembers(self._tokens_key(session_id))
        keys = [self._token_key(t) for t in tokens]
        client.delete(self._tokens_key(session_id), self._data_key(session_id), *keys)

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "redis",
            "url": self.url,
            "prefix": self.prefix,
            "max_bytes": self.max_bytes,
            "idle_expiry": self.idle_expiry,
        }
