"""Frames between processes: JSON only, sizes checked, concurrent requests matched."""

from __future__ import annotations

import asyncio
import os
import stat
import struct

import pytest

from htagweb.wire.ipc import (
    MAX_FRAME_BYTES,
    ConnectionLost,
    FrameBuffer,
    FrameError,
    RpcClient,
    encode_frame,
    listen_unix,
    read_frame,
)


def test_frame_buffer_reassembles_split_and_joined_frames():
    data = encode_frame({"a": 1}) + encode_frame(["é", None])
    buffer = FrameBuffer()
    messages = []
    for i in range(len(data)):  # one byte at a time
        messages += buffer.feed(data[i : i + 1])
    assert messages == [{"a": 1}, ["é", None]]
    assert FrameBuffer().feed(data) == [{"a": 1}, ["é", None]]


def test_oversized_and_invalid_frames_are_refused():
    with pytest.raises(FrameError):
        FrameBuffer().feed(struct.pack("!I", MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameError):
        FrameBuffer().feed(struct.pack("!I", 3) + b"{{{")
    with pytest.raises(TypeError):
        encode_frame({"not json": object()})  # never pickle: unserialisable is an error


async def _pair(path: str, handler):
    server = await asyncio.start_unix_server(handler, path=path)
    return server


def test_rpc_client_matches_concurrent_answers_and_reports_lost_peer(tmp_path):
    path = str(tmp_path / "s.sock")

    async def handler(reader, writer):
        requests = [await read_frame(reader) for _ in range(3)]
        writer.write(encode_frame({"pushed": True}))  # no rid: a push
        for request in reversed(requests):  # answered out of order
            writer.write(encode_frame({"rid": request["rid"], "echo": request["n"]}))
        await writer.drain()
        await read_frame(reader)  # then dies without answering the 4th
        writer.close()

    async def scenario():
        server = await _pair(path, handler)
        pushes = []
        client = await RpcClient.connect(path, on_push=pushes.append)
        answers = await asyncio.gather(*(client.call({"n": n}, timeout=5) for n in range(3)))
        assert [a["echo"] for a in answers] == [0, 1, 2]
        assert pushes == [{"pushed": True}]
        with pytest.raises(ConnectionLost):
            await client.call({"n": 3}, timeout=5)
        assert client.closed
        server.close()

    asyncio.run(scenario())


def test_listen_unix_is_private_and_replaces_a_stale_file(tmp_path):
    path = tmp_path / "app.sock"
    path.write_text("stale")
    listener = listen_unix(str(path))
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    finally:
        listener.close()
