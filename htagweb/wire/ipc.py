"""Length-prefixed JSON frames: the only wire format between workers, supervisor and apps.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON.
JSON (never pickle) keeps a compromised peer from running code in ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME_BYTES = 64 * 1024 * 1024


class FrameError(Exception):
    """A peer sent something that is not a valid frame."""


def encode_frame(message: Any) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FrameError(f"invalid JSON frame: {exc}") from None


async def read_frame(reader: asyncio.StreamReader) -> Any | None:
    """The next message, or None when the peer closed the stream cleanly."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("stream ended inside a frame header") from None
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"announced frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError("stream ended inside a frame") from None
    return decode_body(body)


async def write_frame(writer: asyncio.StreamWriter, message: Any) -> None:
    writer.write(encode_frame(message))
    await writer.drain()


class FrameBuffer:
    """Reassembles frames from bytes read off a plain (non-asyncio) socket."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME_BYTES:
                raise FrameError(f"announced frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            messages.append(decode_body(bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return messages


class ConnectionLost(Exception):
    """The peer went away before answering."""


class RpcClient:
    """One stream to a peer, carrying many concurrent requests matched to answers by "rid".

    Frames without a "rid" are unsolicited (pushes); they go to `on_push` when given.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_push: Any = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_push = on_push
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_rid = 0
        self.closed = False
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(cls, path: str, on_push: Any = None) -> RpcClient:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_FRAME_BYTES)
        return cls(reader, writer, on_push)

    async def call(self, message: dict[str, Any], timeout: float | None = None) -> Any:
        """Send `message` and wait for its answer; ConnectionLost if the peer goes away."""
        if self.closed:
            raise ConnectionLost("connection already closed")
        self._next_rid += 1
        rid = self._next_rid
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._writer.write(encode_frame({**message, "rid": rid}))
            await self._writer.drain()
            return await asyncio.wait_for(future, timeout)
        except (ConnectionError, BrokenPipeError) as exc:
            self.close()
            raise ConnectionLost(str(exc)) from None
        finally:
            self._pending.pop(rid, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a failure already raised another way

    @property
    def busy(self) -> bool:
        """A request is waiting for its answer."""
        return bool(self._pending)

    def notify(self, message: dict[str, Any]) -> None:
        """Send `message` expecting no answer."""
        if not self.closed:
            self._writer.write(encode_frame(message))

    async def _read_loop(self) -> None:
        try:
            while (message := await read_frame(self._reader)) is not None:
                rid = message.get("rid") if isinstance(message, dict) else None
                if rid is None:
                    if self._on_push is not None:
                        self._on_push(message)
                    continue
                future = self._pending.get(rid)
                if future is not None and not future.done():
                    future.set_result(message)
        except (FrameError, ConnectionError):
            pass
        finally:
            self.closed = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLost("peer closed the connection"))
            self._writer.close()

    def close(self) -> None:
        self.closed = True
        self._writer.close()
        self._read_task.cancel()


def listen_unix(path: str, backlog: int = 128) -> socket.socket:
    """A listening Unix socket at `path` (replacing a stale file), private to this user."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(backlog)
    return listener
