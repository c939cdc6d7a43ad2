"""A web worker's connection to its server's supervisor, which it starts if nobody has.

The first worker to need the supervisor starts it, under a file lock, so that workers
racing at startup start exactly one; later workers, and workers that replace recycled
ones, connect to the running one. The supervisor lives as long as the server's master
process (see htagweb.runtime.server_master_pid), whichever worker started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sys
from typing import Any

from ..runtime import ServerDir, server_master_pid
from ..wire.ipc import ConnectionLost, RpcClient
from ..wire.messages import (
    SupervisorCall,
    SupervisorNotice,
    SupervisorReply,
    SupervisorSettings,
)
from .door import AppProcessError, SupervisorError

logger = logging.getLogger(__name__)

SUPERVISOR_START_TIMEOUT = 30.0


class SupervisorClient:
    """One connection to the supervisor, shared by a worker's requests: calls (ensure,
    prepare, kill, end_session, status) are matched to their answers by rid; notices
    (loaded, used) get none. See htagweb.host.supervisor for the protocol."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings  # Config.supervisor_settings()
        self.server_dir: ServerDir | None = None
        self._rpc: RpcClient | None = None
        self._start_lock = asyncio.Lock()

    async def start(self) -> ServerDir:
        """Connect to this server's supervisor, starting it if nobody has yet."""
        async with self._start_lock:
            if self._rpc is not None and not self._rpc.closed:
                assert self.server_dir is not None
                return self.server_dir
            master_pid = server_master_pid()
            server_dir = ServerDir.for_master(master_pid)
            server_dir.create()
            try:
                self._rpc = await RpcClient.connect(str(server_dir.supervisor_socket))
            except OSError:
                self._rpc = await self._start_supervisor(server_dir, master_pid)
            self.server_dir = server_dir
            return server_dir

    async def ask(self, request: SupervisorCall) -> SupervisorReply:
        """The supervisor's answer (connecting again once if it was lost); AppProcessError
        when it answers an error."""
        for attempt in (1, 2):
            await self.start()
            assert self._rpc is not None
            try:
                reply: SupervisorReply = await self._rpc.call(dict(request))
            except ConnectionLost:
                if attempt == 2:
                    raise SupervisorError("lost the supervisor") from None
                continue
            if reply["kind"] == "error":
                raise AppProcessError(reply["error"])
            return reply
        raise AssertionError("unreachable")

    def notify(self, notice: SupervisorNotice) -> None:
        """Send `notice` if connected (notices are hints: none is worth a reconnection)."""
        if self._rpc is not None:
            self._rpc.notify(dict(notice))

    def close(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None

    async def _start_supervisor(self, server_dir: ServerDir, master_pid: int) -> RpcClient:
        lock_fd = os.open(server_dir.lock_file, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, lock_fd, fcntl.LOCK_EX)
            with contextlib.suppress(OSError):  # another worker started it while we waited
                return await RpcClient.connect(str(server_dir.supervisor_socket))
            ready_read, ready_write = os.pipe()
            try:
                process = await self._spawn(server_dir, master_pid, ready_write)
            finally:
                os.close(ready_write)
            try:
                ready = await asyncio.wait_for(
                    asyncio.to_thread(os.read, ready_read, 16), SUPERVISOR_START_TIMEOUT
                )
            except asyncio.TimeoutError:
                ready = b""
            if ready != b"ready":
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                os.close(ready_read)  # the reading thread, if still blocked, now returns
                raise SupervisorError(f"the supervisor did not start (code {process.returncode})")
            os.close(ready_read)
            logger.info("started supervisor %s for master %s", process.pid, master_pid)
            return await RpcClient.connect(str(server_dir.supervisor_socket))
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)

    async def _spawn(
        self, server_dir: ServerDir, master_pid: int, ready_fd: int
    ) -> asyncio.subprocess.Process:
        settings: SupervisorSettings = {
            "start_method": self.settings["start_method"],
            "max_processes": self.settings["max_processes"],
            # Absent (a Gateway made by hand, as tests do): no reserve, nothing merged.
            "memory_reserve": int(self.settings.get("memory_reserve", 0)),
            "merge_memory": bool(self.settings.get("merge_memory", False)),
            "server_dir": str(server_dir.root),
            "master_pid": master_pid,
            "ready_fd": ready_fd,
            "sys_path": sys.path,
            "cwd": os.getcwd(),
            "log_level": logging.getLogger("htagweb").getEffectiveLevel(),
        }
        if "spares_per_app" in self.settings:
            settings["spares_per_app"] = int(self.settings["spares_per_app"])
        # The worker may import htagweb and the app through sys.path changes of its own.
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "htagweb.host.supervisor",
            json.dumps(settings),
            pass_fds=(ready_fd,),
            start_new_session=True,  # terminal signals are for the server, not users' apps
            stdin=asyncio.subprocess.DEVNULL,
            env=environment,
        )
