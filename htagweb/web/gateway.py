"""A web worker's door to its server's supervisor and to users' app processes.

The first worker to need the supervisor starts it (under a file lock, so workers
racing at startup start exactly one); later workers, and workers that replace
recycled ones, connect to the running one. Requests to app processes go straight
to their sockets: the supervisor is only asked when a process must be created.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sys
from collections import OrderedDict
from typing import Any

from ..appref import FQN_PATTERN, AppRef
from ..runtime import ServerDir, app_key, server_master_pid, session_owner
from ..wire.ipc import ConnectionLost, RpcClient, encode_frame, read_frame

logger = logging.getLogger(__name__)

SUPERVISOR_START_TIMEOUT = 30.0
MAX_POOLED_APP_CONNECTIONS = 512


class AppProcessError(RuntimeError):
    """An app process could not answer."""


class AppGone(AppProcessError):
    """No app process runs for this (session, app): the page must be loaded again."""


class AppDied(AppProcessError):
    """The app process ended while handling the request (its deadline, or a crash)."""


class AppTimeout(AppProcessError):
    """The app process did not answer in time; it has been ended."""


class ClientLimited(AppProcessError):
    """A per-IP limit refused the page load (the reason is safe to show)."""


class SupervisorError(AppProcessError):
    """The supervisor could not be started or reached."""


class AppConnection:
    """A connection of its own to a user's app process, kept open for a page: its pushes
    (tag.update()) come down it and, from a WebSocket page, its interactions go up it.
    The app process knows the page by this connection (see htagweb.app.process)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    def send(self, message: dict[str, Any]) -> None:
        self._writer.write(encode_frame(message))

    async def drain(self) -> None:
        await self._writer.drain()

    async def receive(self) -> Any:
        """The next message, None once the app process closed the connection; FrameError
        or ConnectionError if it broke."""
        return await read_frame(self._reader)

    def close(self) -> None:
        self._writer.close()


class Gateway:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings  # start_method, max_processes
        self.server_dir: ServerDir | None = None
        self._supervisor: RpcClient | None = None
        self._start_lock = asyncio.Lock()
        self._app_clients: OrderedDict[str, RpcClient] = OrderedDict()
        self._timeouts: dict[str, float] = {}  # each app process's timeout_interaction, as told
        self._client_pids: dict[str, int] = {}  # the process a pooled connection reaches

    # -- supervisor ----------------------------------------------------------------

    async def start(self) -> ServerDir:
        """Connect to this server's supervisor, starting it if nobody has yet."""
        async with self._start_lock:
            if self._supervisor is not None and not self._supervisor.closed:
                assert self.server_dir is not None
                return self.server_dir
            master_pid = server_master_pid()
            server_dir = ServerDir.for_master(master_pid)
            server_dir.create()
            try:
                self._supervisor = await RpcClient.connect(str(server_dir.supervisor_socket))
            except OSError:
                self._supervisor = await self._start_supervisor(server_dir, master_pid)
            self.server_dir = server_dir
            return server_dir

    async def _start_supervisor(self, server_dir: ServerDir, master_pid: int) -> RpcClient:
        lock_fd = os.open(server_dir.lock_file, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, lock_fd, fcntl.LOCK_EX)
            with contextlib.suppress(OSError):  # another worker started it while we waited
                return await RpcClient.connect(str(server_dir.supervisor_socket))
            ready_read, ready_write = os.pipe()
            settings = {
                **self.settings,
                "server_dir": str(server_dir.root),
                "master_pid": master_pid,
                "ready_fd": ready_write,
                "sys_path": sys.path,
                "cwd": os.getcwd(),
                "log_level": logging.getLogger("htagweb").getEffectiveLevel(),
            }
            # The worker may import htagweb and the app through sys.path changes of its own.
            environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "htagweb.host.supervisor",
                    json.dumps(settings),
                    pass_fds=(ready_write,),
                    start_new_session=True,  # terminal signals are for the server, not users' apps
                    stdin=asyncio.subprocess.DEVNULL,
                    env=environment,
                )
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

    async def ask_supervisor(self, message: dict[str, Any]) -> dict[str, Any]:
        for attempt in (1, 2):
            await self.start()
            assert self._supervisor is not None
            try:
                reply: dict[str, Any] = await self._supervisor.call(message)
            except ConnectionLost:
                if attempt == 2:
                    raise SupervisorError("lost the supervisor") from None
                continue
            if "error" in reply:
                raise AppProcessError(reply["error"])
            return reply
        raise AssertionError("unreachable")

    async def prepare(self, ref: AppRef) -> None:
        """Start the app's template now, so its first user does not wait for imports."""
        await self.ask_supervisor({"op": "prepare", "app": ref.to_json()})

    async def status(self) -> dict[str, Any]:
        return await self.ask_supervisor({"op": "status"})

    # -- app processes -------------------------------------------------------------

    def app_socket(self, session_id: str, fqn: str) -> str:
        assert self.server_dir is not None, "Gateway.start() first"
        return str(self.server_dir.app_socket(app_key(session_id, fqn)))

    async def ensure(
        self,
        ref: AppRef,
        session_id: str,
        stale: bool = False,
        client: dict[str, Any] | None = None,
    ) -> str:
        """The socket of the user's live process (started if needed).

        `client`: the per-IP limits this page load is under (see Supervisor.ensure).
        """
        reply = await self.ask_supervisor(
            {
                "op": "ensure",
                "app": ref.to_json(),
                "key": app_key(session_id, ref.fqn),
                "owner": session_owner(session_id),
                "stale": stale,
                "client": client,
            }
        )
        if "limited" in reply:
            raise ClientLimited(str(reply["limited"]))
        path = str(reply["socket"])
        if path in self._app_clients and self._client_pids.get(path) != reply["pid"]:
            # A new process answers at this path: the pooled connection went to the old one.
            self._app_clients.pop(path).close()
        self._client_pids[path] = reply["pid"]
        return path

    async def connect(self, session_id: str, fqn: str) -> AppConnection:
        """A connection of its own to this user's process of `fqn`; AppGone if none runs."""
        await self.start()
        if not FQN_PATTERN.match(fqn):
            raise AppGone("no such app")
        try:
            reader, writer = await asyncio.open_unix_connection(self.app_socket(session_id, fqn))
        except OSError:
            raise AppGone("no app process at this address") from None
        return AppConnection(reader, writer)

    async def kill(self, session_id: str, fqn: str) -> None:
        await self.ask_supervisor({"op": "kill", "key": app_key(session_id, fqn)})

    async def end_session(self, session_id: str) -> None:
        """End every app process of this session (see rotate_session)."""
        await self.ask_supervisor({"op": "end_session", "owner": session_owner(session_id)})

    async def render(
        self,
        ref: AppRef,
        session_id: str,
        message: dict[str, Any],
        timeout: float | None,
        client: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A fresh instance of the app for this user (creating the process if needed)."""
        path = await self.ensure(ref, session_id, client=client)
        try:
            try:
                return await self.call_app(path, {**message, "socket": path}, timeout)
            except AppGone:  # a dead process the supervisor had not yet heard of
                again = {**client, "new_session": False} if client else None  # counted once
                path = await self.ensure(ref, session_id, stale=True, client=again)
                return await self.call_app(path, {**message, "socket": path}, timeout)
        except AppTimeout:
            await self.kill(session_id, ref.fqn)
            raise
        finally:
            if self._supervisor is not None:
                self._supervisor.notify({"op": "loaded", "key": app_key(session_id, ref.fqn)})

    async def call_app(
        self, path: str, message: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        client = await self._app_client(path)
        try:
            reply: dict[str, Any] = await client.call(message, timeout)
        except ConnectionLost:
            self._app_clients.pop(path, None)
            raise AppDied("the app process ended while handling the request") from None
        except asyncio.TimeoutError:
            self._app_clients.pop(path, None)
            client.close()
            raise AppTimeout("the app process did not answer in time") from None
        if "timeout_interaction" in reply:
            self._timeouts[path] = float(reply["timeout_interaction"])
        return reply

    def timeout_of(self, path: str, default: float) -> float:
        """The timeout_interaction the app process at `path` last said it applies."""
        return self._timeouts.get(path, default)

    async def _app_client(self, path: str) -> RpcClient:
        client = self._app_clients.get(path)
        if client is not None and not client.closed:
            self._app_clients.move_to_end(path)
            return client
        try:
            client = await RpcClient.connect(path)
        except OSError:
            self._app_clients.pop(path, None)
            raise AppGone("no app process at this address") from None
        self._app_clients[path] = client
        if len(self._app_clients) > MAX_POOLED_APP_CONNECTIONS:
            idle = [p for p, c in self._app_clients.items() if not c.busy][:16]
            for idle_path in idle:  # oldest idle first; a call under way is never cut
                self._app_clients.pop(idle_path).close()
                self._timeouts.pop(idle_path, None)
                self._client_pids.pop(idle_path, None)
        return client

    async def close(self) -> None:
        for client in self._app_clients.values():
            client.close()
        self._app_clients.clear()
        if self._supervisor is not None:
            self._supervisor.close()
            self._supervisor = None
