"""The local door (see htagweb.web.door): a web worker's way to its server's supervisor
and to the users' app processes of this host.

The first worker to need the supervisor starts it (under a file lock, so workers
racing at startup start exactly one); later workers, and workers that replace
recycled ones, connect to the running one. Requests to app processes go straight
to their sockets: the supervisor is only asked when a process must be created, and
told (at most once a second per process) that pages use one, for its eviction order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from typing import Any, cast

from ..appref import FQN_PATTERN, AppRef
from ..runtime import ServerDir, app_key, server_master_pid, session_owner
from ..wire.ipc import ConnectionLost, RpcClient, encode_frame, read_frame
from ..wire.messages import (
    AppRefJson,
    AppReply,
    AppRequest,
    ClientLimits,
    HandshakeRequest,
    InteractRequest,
    RenderRequest,
    Started,
    SupervisorReply,
    SupervisorRequest,
    SupervisorSettings,
)
from .door import (
    AppConnection,
    AppDied,
    AppGone,
    AppProcessError,
    AppTimeout,
    ClientLimited,
    SupervisorError,
    worker_deadline,
)

logger = logging.getLogger(__name__)

SUPERVISOR_START_TIMEOUT = 30.0
MAX_POOLED_APP_CONNECTIONS = 512
USE_NOTICE_INTERVAL = 1.0  # seconds between two "used" notices for one process
MAX_USE_NOTICES_KEPT = 100_000


class LocalConnection(AppConnection):
    """A page's connection to an app process of this host, over its Unix socket."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_interaction: Any
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_interaction = on_interaction

    def send(self, request: AppRequest) -> None:
        if request["op"] in ("interact", "attach"):
            self._on_interaction()
        self._writer.write(encode_frame(request))

    async def drain(self) -> None:
        await self._writer.drain()

    async def receive(self) -> AppReply | None:
        return cast("AppReply | None", await read_frame(self._reader))

    def close(self) -> None:
        self._writer.close()


class Gateway:
    """Implements htagweb.web.door.AppDoor for the app processes of this host."""

    def __init__(self, settings: dict[str, Any], timeout_interaction: float = 60) -> None:
        self.settings = settings  # start_method, max_processes
        self.timeout_interaction = timeout_interaction  # until a process tells its own
        self.server_dir: ServerDir | None = None
        self._supervisor: RpcClient | None = None
        self._start_lock = asyncio.Lock()
        self._app_clients: OrderedDict[str, RpcClient] = OrderedDict()
        self._timeouts: dict[str, float] = {}  # each app process's timeout_interaction, as told
        self._client_pids: dict[str, int] = {}  # the process a pooled connection reaches
        self._use_noticed: dict[str, float] = {}  # when each process's use was last told

    # -- supervisor ----------------------------------------------------------------------

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
            try:
                process = await self._spawn_supervisor(server_dir, master_pid, ready_write)
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

    async def _spawn_supervisor(
        self, server_dir: ServerDir, master_pid: int, ready_fd: int
    ) -> asyncio.subprocess.Process:
        settings: SupervisorSettings = {
            "start_method": self.settings["start_method"],
            "max_processes": self.settings["max_processes"],
            "server_dir": str(server_dir.root),
            "master_pid": master_pid,
            "ready_fd": ready_fd,
            "sys_path": sys.path,
            "cwd": os.getcwd(),
            "log_level": logging.getLogger("htagweb").getEffectiveLevel(),
        }
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

    async def ask_supervisor(self, request: SupervisorRequest) -> SupervisorReply:
        for attempt in (1, 2):
            await self.start()
            assert self._supervisor is not None
            try:
                reply: SupervisorReply = await self._supervisor.call(dict(request))
            except ConnectionLost:
                if attempt == 2:
                    raise SupervisorError("lost the supervisor") from None
                continue
            if reply["kind"] == "error":
                raise AppProcessError(reply["error"])
            return reply
        raise AssertionError("unreachable")

    def _notify_supervisor(self, notice: SupervisorRequest) -> None:
        if self._supervisor is not None:
            self._supervisor.notify(dict(notice))

    async def prepare(self, ref: AppRef) -> None:
        """Start the app's template now, so its first user does not wait for imports."""
        await self.ask_supervisor({"op": "prepare", "app": _ref_json(ref)})

    async def status(self) -> SupervisorReply:
        return await self.ask_supervisor({"op": "status"})

    async def kill(self, session_id: str, fqn: str) -> None:
        await self.ask_supervisor({"op": "kill", "key": app_key(session_id, fqn)})

    async def end_session(self, session_id: str) -> None:
        """End every app process of this session (see rotate_session)."""
        await self.ask_supervisor({"op": "end_session", "owner": session_owner(session_id)})

    def _note_use(self, key: str) -> None:
        """Tell the supervisor a page engaged with the process of `key`: at once the first
        time, then at most once a second (its eviction order needs no finer clock)."""
        now = time.monotonic()
        if now - self._use_noticed.get(key, -USE_NOTICE_INTERVAL) < USE_NOTICE_INTERVAL:
            return
        if len(self._use_noticed) >= MAX_USE_NOTICES_KEPT:
            self._use_noticed.clear()  # forgetting costs one early notice per process
        self._use_noticed[key] = now
        self._notify_supervisor({"op": "used", "key": key, "engaged": True})

    # -- app processes -------------------------------------------------------------------

    def _app_socket(self, key: str) -> str:
        assert self.server_dir is not None, "Gateway.start() first"
        return str(self.server_dir.app_socket(key))

    async def ensure(
        self,
        ref: AppRef,
        session_id: str,
        stale: bool = False,
        client: ClientLimits | None = None,
    ) -> str:
        """The socket of the user's live process (started if needed); past a per-address
        limit of `client`, ClientLimited."""
        reply = await self.ask_supervisor(
            {
                "op": "ensure",
                "app": _ref_json(ref),
                "key": app_key(session_id, ref.fqn),
                "owner": session_owner(session_id),
                "stale": stale,
                "client": client,
            }
        )
        if reply["kind"] == "limited":
            raise ClientLimited(reply["reason"])
        started = cast(Started, reply)
        path = started["socket"]
        if path in self._app_clients and self._client_pids.get(path) != started["pid"]:
            # A new process answers at this path: the pooled connection went to the old one.
            self._app_clients.pop(path).close()
        self._client_pids[path] = started["pid"]
        return path

    async def render(
        self, ref: AppRef, session_id: str, request: RenderRequest, client: ClientLimits | None
    ) -> AppReply:
        """A fresh instance of the app for this user (creating the process if needed)."""
        deadline = worker_deadline(request["options"]["timeout_interaction"])
        path = await self.ensure(ref, session_id, client=client)
        try:
            try:
                return await self.call_app(path, request, deadline)
            except AppGone:  # a dead process the supervisor had not yet heard of
                # The new session, if one, was counted by the first ensure.
                again: ClientLimits | None = {**client, "new_session": False} if client else None
                path = await self.ensure(ref, session_id, stale=True, client=again)
                return await self.call_app(path, request, deadline)
        except AppTimeout:
            await self.kill(session_id, ref.fqn)
            raise
        finally:
            self._notify_supervisor({"op": "loaded", "key": app_key(session_id, ref.fqn)})

    async def interact(
        self, session_id: str, fqn: str, request: InteractRequest | HandshakeRequest
    ) -> AppReply:
        await self.start()
        key = app_key(session_id, fqn)
        path = self._app_socket(key)
        self._note_use(key)
        deadline = worker_deadline(self._timeouts.get(path, self.timeout_interaction))
        try:
            return await self.call_app(path, request, deadline)
        except AppTimeout:
            with contextlib.suppress(AppProcessError):
                await self.kill(session_id, fqn)
            raise

    def timeout_of(self, session_id: str, fqn: str) -> float:
        if self.server_dir is None:
            return self.timeout_interaction
        path = self._app_socket(app_key(session_id, fqn))
        return self._timeouts.get(path, self.timeout_interaction)

    async def connect(self, session_id: str, fqn: str) -> AppConnection:
        await self.start()
        if not FQN_PATTERN.match(fqn):
            raise AppGone("no such app")
        key = app_key(session_id, fqn)
        try:
            reader, writer = await asyncio.open_unix_connection(self._app_socket(key))
        except OSError:
            raise AppGone("no app process at this address") from None
        return LocalConnection(reader, writer, lambda: self._note_use(key))

    async def call_app(self, path: str, request: AppRequest, timeout: float | None) -> AppReply:
        client = await self._app_client(path)
        try:
            reply: AppReply = await client.call(dict(request), timeout)
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


def _ref_json(ref: AppRef) -> AppRefJson:
    return cast(AppRefJson, ref.to_json())
