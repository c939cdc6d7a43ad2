"""RedisStore: sessions in Redis, shared by the workers and app processes of every host.

Keys, under a prefix (default "htagweb:"):
    t:<token>       -> session id        a cookie token
    k:<session id>  -> set of tokens     to forget them with the session
    d:<session id>  -> hash key -> JSON  the data
    b:<session id>  -> integer           its size, as max_bytes counts it
Each expires after idle_expiry without use: Redis deletes idle sessions itself.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any

from .base import TOUCH_EVERY, SessionStore, new_session_id

# Writes changed keys and deletes others in one step, unless the session would then be
# larger than max_bytes. The session's size is kept in its own key, so a write reads only
# the keys it replaces (a session from before that key is counted once, in full).
# KEYS: the data hash, the size. ARGV: max_bytes, ttl, n, n (key, text) pairs, deleted keys.
# Returns -1 once written, or the size it would have had (nothing written).
WRITE_SCRIPT = """
local n = tonumber(ARGV[3])
local last_pair = 3 + 2 * n
local function each_chunk(from, to, step, call)  -- Lua unpacks a few thousand values at most
  for first = from, to, 1000 * step do
    call(first, math.min(first + 1000 * step - 1, to))
  end
end
local touched = {}
for i = 4, #ARGV do
  if i > last_pair or (i - 4) % 2 == 0 then touched[#touched + 1] = ARGV[i] end
end
local total = tonumber(redis.call('GET', KEYS[2]) or -1)
if total < 0 or redis.call('EXISTS', KEYS[1]) == 0 then  -- not counted yet, or data gone
  total = 0
  local stored = redis.call('HGETALL', KEYS[1])
  for i = 1, #stored, 2 do total = total + #stored[i] + #stored[i + 1] end
end
each_chunk(1, #touched, 1, function(first, last)
  local replaced = redis.call('HMGET', KEYS[1], unpack(touched, first, last))
  for i = first, last do
    local text = replaced[i - first + 1]
    if text then total = total - #touched[i] - #text end
  end
end)
for i = 4, last_pair, 2 do total = total + #ARGV[i] + #ARGV[i + 1] end
if total > tonumber(ARGV[1]) then return total end
each_chunk(last_pair + 1, #ARGV, 1, function(first, last)
  redis.call('HDEL', KEYS[1], unpack(ARGV, first, last))
end)
each_chunk(4, last_pair, 2, function(first, last)
  redis.call('HSET', KEYS[1], unpack(ARGV, first, last))
end)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], total, 'EX', ARGV[2])
return -1
"""

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
        self._write_script: Any = None
        self._pid = 0
        self._ttl = max(1, int(self.idle_expiry))
        self._touched: OrderedDict[str, float] = OrderedDict()  # token -> when its TTL was renewed
        self._lock = threading.Lock()  # web workers call a store from several threads

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None or self._pid != os.getpid():  # never share one across fork
                self._client = redis.Redis.from_url(self.url, decode_responses=True)
                self._write_script = self._client.register_script(WRITE_SCRIPT)
                self._pid = os.getpid()
            return self._client

    def _token_key(self, token: str) -> str:
        return f"{self.prefix}t:{token}"

    def _tokens_key(self, session_id: str) -> str:
        return f"{self.prefix}k:{session_id}"

    def _data_key(self, session_id: str) -> str:
        return f"{self.prefix}d:{session_id}"

    def _size_key(self, session_id: str) -> str:
        return f"{self.prefix}b:{session_id}"

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
        pipe.expire(self._size_key(session_id), self._ttl)
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
                    old_data, old_size = self._data_key(old_id), self._size_key(old_id)
                    pipe.watch(old_data, old_size, self._tokens_key(old_id))
                    has_data, has_size = pipe.exists(old_data), pipe.exists(old_size)
                    tokens = pipe.smembers(self._tokens_key(old_id))
                    old_tokens = [self._token_key(token) for token in tokens]
                    pipe.multi()
                    pipe.delete(self._token_key(old_token), self._tokens_key(old_id), *old_tokens)
                    if has_data:
                        pipe.rename(old_data, self._data_key(session_id))  # its TTL goes along
                    if has_size:
                        pipe.rename(old_size, self._size_key(session_id))
                    pipe.set(self._token_key(new_token), session_id, ex=self._ttl)
                    pipe.sadd(self._tokens_key(session_id), new_token)
                    pipe.expire(self._tokens_key(session_id), self._ttl)
                    pipe.execute()
                    return session_id
                except redis.WatchError:  # written meanwhile: move what is there now
                    continue

    def load(self, session_id: str) -> dict[str, str]:
        return dict(self._redis().hgetall(self._data_key(session_id)))

    def load_keys(self, session_id: str, keys: list[str]) -> dict[str, str]:
        texts = self._redis().hmget(self._data_key(session_id), keys)
        return {key: text for key, text in zip(keys, texts, strict=True) if text is not None}

    def write(self, session_id: str, changed: dict[str, str], deleted: set[str]) -> None:
        self._redis()  # connected, its script registered, in this process
        pairs = [part for item in changed.items() for part in item]
        total = self._write_script(
            keys=[self._data_key(session_id), self._size_key(session_id)],
            args=[self.max_bytes, self._ttl, len(changed), *pairs, *deleted],
        )
        if total >= 0:
            self.check_total(int(total), {})  # raises SessionTooLarge, with the figures

    def delete(self, session_id: str) -> None:
        client = self._redis()
        tokens = client.smembers(self._tokens_key(session_id))
        keys = [self._token_key(t) for t in tokens]
        client.delete(
            self._tokens_key(session_id),
            self._data_key(session_id),
            self._size_key(session_id),
            *keys,
        )

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
