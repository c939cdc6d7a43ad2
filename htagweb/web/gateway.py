"""The local door (see htagweb.web.door): a web worker's way to the users' app processes
of this host.

Requests to app processes go straight to their sockets: the supervisor (see
supervisor_client.py) is only asked when a process must be created, and told (at most
once a second per process) that pages use one, for its eviction order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from ..appref import FQN_PATTERN, AppRef
from ..runtime import ServerDir, app_key, session_owner
from ..wire.ipc import ConnectionLost, RpcClient, encode_frame, read_frame
from ..wire.messages import (
    AppReply,
    AppRequest,
    ClientLimits,
    HandshakeRequest,
    InteractRequest,
    RenderRequest,
    SupervisorCall,
    SupervisorReply,
)
from .door import (
    AppConnection,
    AppDied,
    AppGone,
    AppProcessError,
    AppTimeout,
    ClientLimited,
    worker_deadline,
)
from .supervisor_client import SupervisorClient

logger = logging.getLogger(__name__)

MAX_POOLED_APP_CONNECTIONS = 512
USE_NOTICE_INTERVAL = 1.0  # seconds between two "used" notices for one process
USE_NOTICES_PRUNED_AT = 10_000  # entries kept before those older than the interval go


class LocalConnection(AppConnection):
    """A page's connection to an app process of this host, over its Unix socket."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_use: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_use = on_use  # the page engaged with its process: tell the supervisor

    def send(self, request: AppRequest) -> None:
        if request["op"] in ("interact", "attach"):
            self._on_use()
        self._writer.write(encode_frame(request))

    async def drain(self) -> None:
        await self._writer.drain()

    async def receive(self) -> AppReply | None:
        return cast("AppReply | None", await read_frame(self._reader))

    def close(self) -> None:
        self._writer.close()


class Gateway:
    """The door (htagweb.web.door.AppDoor) to the app processes of this host.

    Page loads ask the supervisor for the user's process (ensure), then render over a
    pooled connection to its socket; HTTP interactions use the same pooled connections;
    WebSocket pages and event streams get a connection of their own (connect). Which
    socket serves a user is a hash of the session id and the app (runtime.app_key).
    """

    def __init__(self, settings: dict[str, Any], timeout_interaction: float = 60) -> None:
        self.supervisor = SupervisorClient(settings)
        self.timeout_interaction = timeout_interaction  # until a process tells its own
        self._app_clients: OrderedDict[str, RpcClient] = OrderedDict()
        self._timeouts: dict[str, float] = {}  # each app process's timeout_interaction, as told
        self._client_pids: dict[str, int] = {}  # the process a pooled connection reaches
        self._use_noticed: dict[str, float] = {}  # when each process's use was last told

    # -- supervisor ----------------------------------------------------------------------

    @property
    def server_dir(self) -> ServerDir | None:
        return self.supervisor.server_dir

    async def start(self) -> ServerDir:
        """Connect to this server's supervisor, starting it if nobody has yet."""
        return await self.supervisor.start()

    async def ask_supervisor(self, request: SupervisorCall) -> SupervisorReply:
        return await self.supervisor.ask(request)

    async def prepare(self, ref: AppRef) -> None:
        """Start the app's template now, so its first user does not wait for imports."""
        await self.ask_supervisor({"op": "prepare", "app": ref.to_json()})

    async def status(self) -> SupervisorReply:
        return await self.ask_supervisor({"op": "status"})

    async def kill(self, session_id: str, fqn: str) -> None:
        await self.ask_supervisor({"op": "kill", "key": app_key(session_id, fqn)})

    async def end_session(self, session_id: str) -> None:
        """End every app process of this session (see rotate_session); the supervisor
        answers once they are gone."""
        await self.ask_supervisor({"op": "end_session", "owner": session_owner(session_id)})

    def _note_use(self, key: str) -> None:
        """Tell the supervisor a page engaged with the process of `key`: at once the first
        time, then at most once a second (its eviction order needs no finer clock)."""
        now = time.monotonic()
        if now - self._use_noticed.get(key, -USE_NOTICE_INTERVAL) < USE_NOTICE_INTERVAL:
            return
        if len(self._use_noticed) >= USE_NOTICES_PRUNED_AT:
            recent = {k: t for k, t in self._use_noticed.items() if now - t < USE_NOTICE_INTERVAL}
            # Mostly recent, it would be pruned again at once: forgetting all costs one early
            # notice per process instead.
            self._use_noticed = recent if len(recent) < USE_NOTICES_PRUNED_AT // 2 else {}
        self._use_noticed[key] = now
        self.supervisor.notify({"op": "used", "key": key, "engaged": True})

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
                "app": ref.to_json(),
                "key": app_key(session_id, ref.fqn),
                "owner": session_owner(session_id),
                "stale": stale,
                "client": client,
            }
        )
        if reply["kind"] == "limited":
            raise ClientLimited(reply["reason"])
        if reply["kind"] != "started":
            raise AppProcessError(f"the supervisor answered {reply['kind']!r} to ensure")
        path = reply["socket"]
        if path in self._app_clients and self._client_pids.get(path) != reply["pid"]:
            # A new process answers at this path: the pooled connection went to the old one.
            self._app_clients.pop(path).close()
        self._client_pids[path] = reply["pid"]
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
            key = app_key(session_id, ref.fqn)
            self._use_noticed.pop(key, None)  # maybe a new process: its first use counts
            self.supervisor.notify({"op": "loaded", "key": key})

    async def interact(
        self, session_id: str, fqn: str, request: InteractRequest | HandshakeRequest
    ) -> AppReply:
        await self.start()
        key = app_key(session_id, fqn)
        path = self._app_socket(key)
        deadline = worker_deadline(self._timeouts.get(path, self.timeout_interaction))
        try:
            reply = await self.call_app(path, request, deadline)
        except AppTimeout:
            with contextlib.suppress(AppProcessError):
                await self.kill(session_id, fqn)
            raise
        if request["op"] == "interact":  # a key exchange alone does not engage
            self._note_use(key)
        return reply

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
        self.supervisor.close()
