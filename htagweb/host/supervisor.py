"""The per-host supervisor: owner of every app process of one server.

Web workers come and go (gunicorn recycles them, one may be SIGKILLed); the
supervisor stays, so users' apps survive them. It lives exactly as long as the
server's master process: when the master ends it ends every app process, its
templates, and removes the runtime directory.

Workers ask it, over supervisor.sock, with framed JSON (htagweb.wire.ipc):

    ensure   {app, key, owner, stale, client}  a live process for this (session, app)
                                -> {socket, pid}; owner: the session's hash
    loaded   {key}              its page was served (no answer): it may now be evicted
    prepare  {app}              start the app's template and spares ahead of its first user
    kill     {key}              end that process (an interaction ran past its deadline)
    end_session {owner}         end every process of a session (its cookie was rotated)
    status   {}                 what runs, for tests and benchmarks

Each app keeps a few spare processes, forked ahead and already serving on a spare
socket: a new user's process is a spare whose socket is renamed to the user's name,
so the fork and the process's start-up are off the page load's path. Spares count
toward the process cap: at the cap, refilling them ends a process ahead of the next
user (a small cap, under 16 per spare, keeps no spares).

What ends at the cap (see `_eviction_rank`): first a process no page ever engaged
with (loaded, never clicked nor connected: what an anonymous flood of page loads
makes), then the least recently used process of the client site holding the most
processes (an IPv4 address, an IPv6 /48). So a flood from one site makes room from its
own processes, never by ending users who are active.

Signals: SIGTERM, SIGINT and SIGHUP stop it, like its master's end does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..appref import AppRef
from ..limits import RateLimit, site_of
from ..runtime import (
    ServerDir,
    log_to_stderr,
    mark_used,
    process_alive,
    process_running,
    remove_stale_server_dirs,
    usage,
)
from ..wire.ipc import MAX_FRAME_BYTES, FrameError, encode_frame, read_frame
from .launchers import Launcher, LaunchError, make_launcher

logger = logging.getLogger(__name__)

MASTER_POLL_INTERVAL = 1.0  # only where pidfd_open is missing
LOAD_GRACE = 120.0  # a page load whose worker never said "loaded" is evictable after this
MAX_TRACKED_ADDRESSES = 100_000  # client addresses whose new-session rate is followed


class LimitReached(Exception):
    """A per-IP limit refuses this page load."""


@dataclass
class AppProcessRecord:
    key: str  # "" for a spare
    pid: int
    fqn: str
    version: int
    socket: Path
    launcher: Launcher
    loading_since: float | None = None  # a page load is under way: not to be evicted
    client_ip: str = ""  # the address whose page load started it (for per-IP limits)
    site: str = ""  # that address as fair eviction counts it (see limits.site_of)
    owner: str = ""  # the hash of its session (see runtime.session_owner)

    def evictable(self) -> bool:
        return self.loading_since is None or time.monotonic() - self.loading_since > LOAD_GRACE


class Supervisor:
    def __init__(self, server_dir: ServerDir, master_pid: int, settings: dict[str, Any]) -> None:
        self.server_dir = server_dir
        self.master_pid = master_pid
        self.start_method: str = settings.get("start_method", "fork")
        self.max_processes: int = int(settings["max_processes"])
        self.spares_per_app: int = int(settings.get("spares_per_app", 2))
        self.app_spec = {
            "sys_path": settings["sys_path"],
            "cwd": settings["cwd"],
            "log_level": settings.get("log_level", logging.WARNING),
        }
        self.processes: dict[str, AppProcessRecord] = {}
        self.by_pid: dict[int, AppProcessRecord] = {}
        self.launchers: dict[str, Launcher] = {}
        self.spares: dict[str, list[AppProcessRecord]] = {}  # by app fqn
        self._spare_names = itertools.count()
        self._replenishing: set[str] = set()
        self._launching = 0
        self._socket_owner: dict[Path, int] = {}  # which process answers at each socket path
        self.retired: list[Launcher] = []
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._new_sessions: collections.OrderedDict[str, RateLimit] = collections.OrderedDict()
        self._starting: collections.Counter[str] = collections.Counter()  # forks, by address
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifetime ------------------------------------------------------------------

    async def run(self, ready_fd: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self.stop)
        self._watch_master()
        server = await asyncio.start_unix_server(
            self._serve_worker, path=str(self.server_dir.supervisor_socket), limit=MAX_FRAME_BYTES
        )
        self.server_dir.supervisor_pid_file.write_text(str(os.getpid()))
        logger.info("supervisor %s up for master %s", os.getpid(), self.master_pid)
        if ready_fd is not None:
            os.write(ready_fd, b"ready")
            os.close(ready_fd)
        await self._stopping.wait()
        server.close()
        await self._shutdown()

    def stop(self) -> None:
        self._stopping.set()

    def _watch_master(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.master_pid)
        except (AttributeError, OSError):
            self._spawn_task(self._poll_master())
            return
        loop.add_reader(pidfd, self._master_ended)

    def _master_ended(self) -> None:
        logger.info("master %s ended: stopping", self.master_pid)
        self.stop()

    async def _poll_master(self) -> None:
        while process_alive(self.master_pid):
            await asyncio.sleep(MASTER_POLL_INTERVAL)
        self._master_ended()

    async def _shutdown(self) -> None:
        launchers = list(self.launchers.values()) + self.retired
        await asyncio.gather(*(launcher.close() for launcher in launchers), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        self.server_dir.remove()
        logger.info("supervisor %s stopped", os.getpid())

    def _spawn_task(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests from workers -----------------------------------------------------

    async def _serve_worker(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while (message := await read_frame(reader)) is not None:
                self._spawn_task(self._answer(message, writer))
        except (FrameError, ConnectionError) as exc:
            logger.debug("worker connection dropped: %s", exc)
        finally:
            writer.close()

    async def _answer(self, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        if message.get("op") == "loaded":  # a notice: nothing to answer
            self.page_loaded(str(message.get("key")))
            return
        try:
            reply = await self._dispatch(message)
        except LaunchError as exc:
            reply = {"error": str(exc)}
        except LimitReached as exc:
            reply = {"limited": str(exc)}
        except Exception as exc:
            logger.exception("supervisor request %r failed", message.get("op"))
            reply = {"error": f"supervisor error: {exc}"}
        reply["rid"] = message.get("rid")
        with contextlib.suppress(ConnectionError):
            writer.write(encode_frame(reply))
            await writer.drain()

    async def _dispatch(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "ensure":
            started = await self.ensure(
                AppRef.from_json(message["app"]),
                message["key"],
                bool(message.get("stale")),
                message.get("client"),
                str(message.get("owner") or ""),
            )
            return {"socket": str(started.socket), "pid": started.pid}
        if op == "end_session":
            self.end_session(str(message["owner"]))
            return {"ok": True}
        if op == "prepare":
            launcher = await self._launcher_for(AppRef.from_json(message["app"]))
            self._replenish(launcher)
            return {"ok": True}
        if op == "kill":
            record = self.processes.get(message["key"])
            if record is not None:
                self._end(record)
            return {"ok": True}
        if op == "status":
            return self.status()
        return {"error": f"unknown op {op!r}"}

    def status(self) -> dict[str, Any]:
        templates = [
            getattr(launcher, "template_pid", None) for launcher in self.launchers.values()
        ]
        return {
            "pid": os.getpid(),
            "processes": [
                {"key": r.key, "pid": r.pid, "fqn": r.fqn} for r in self.processes.values()
            ],
            "templates": [pid for pid in templates if pid],
            "spares": [r.pid for spares in self.spares.values() for r in spares],
            "max_processes": self.max_processes,
        }

    # -- app processes -------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def ensure(
        self,
        ref: AppRef,
        key: str,
        stale: bool,
        client: dict[str, Any] | None = None,
        owner: str = "",
    ) -> AppProcessRecord:
        """The live process of `key`, started (or restarted when stale or outdated).

        `client` carries the page load's address and per-IP limits: {"ip",
        "new_session", "max_processes", "new_sessions_per_minute"}; past one,
        LimitReached. `owner` names the session (see end_session).
        """
        async with self._lock(key):
            if client and client.get("new_session"):
                self._admit_new_session(client)
            record = self.processes.get(key)
            # Versions only move forward: workers that imported the app before a deploy
            # must not bring the old code back.
            if record is not None and (stale or record.version < ref.version):
                self._end(record)
                record = None
            if record is not None:
                return record
            address = str(client.get("ip", "")) if client else ""
            if client:
                self._admit_new_process(client)
            # Counted as this address's until it is in self.processes: parallel page loads
            # from one address, each waiting for its fork, cannot all pass the limit.
            self._starting[address] += 1
            try:
                return await self._start(ref, key, address, owner)
            finally:
                self._starting[address] -= 1
                if not self._starting[address]:
                    del self._starting[address]

    async def _start(self, ref: AppRef, key: str, address: str, owner: str) -> AppProcessRecord:
        """A process for `key`: a spare taken over, or a new fork (under the key's lock)."""
        launcher = await self._launcher_for(ref)
        socket_path = self.server_dir.app_socket(key)
        spares = self.spares.get(ref.fqn)
        if spares:
            record = spares.pop()
            os.replace(record.socket, socket_path)  # atomic: it now answers at the user's name
            self._socket_owner.pop(record.socket, None)
            record.key, record.socket = key, socket_path
        else:
            self._enforce_cap(keep=key, incoming=1)
            self._socket_owner[socket_path] = 0  # being rebound: an old owner's end keeps it
            pid = await self._launch(launcher, socket_path)
            record = AppProcessRecord(key, pid, ref.fqn, ref.version, socket_path, launcher)
            self.by_pid[pid] = record
        self._socket_owner[socket_path] = record.pid
        record.client_ip, record.site = address, site_of(address)
        record.owner = owner
        record.loading_since = time.monotonic()
        with contextlib.suppress(OSError):
            mark_used(socket_path, engaged_at=0)  # the most recently used, never engaged
        self.processes[key] = record
        self._replenish(launcher)
        logger.debug("app process %s serves %s", record.pid, ref.fqn)
        return record

    def _admit_new_process(self, client: dict[str, Any]) -> None:
        limit = int(client.get("max_processes") or 0)
        ip = str(client.get("ip", ""))
        if limit <= 0:
            return
        # Checked in /proc: the notice that a process ended may still be on its way.
        live = sum(r.client_ip == ip and process_running(r.pid) for r in self.processes.values())
        if live + self._starting[ip] >= limit:
            logger.warning("refused a new app process for %s: %s live already", ip, limit)
            raise LimitReached("too many apps open from this address")

    def _admit_new_session(self, client: dict[str, Any]) -> None:
        per_minute = float(client.get("new_sessions_per_minute") or 0)
        if per_minute <= 0:
            return
        ip = str(client.get("ip", ""))
        bucket = self._new_sessions.get(ip)
        if bucket is None or bucket.rate != per_minute / 60:
            bucket = self._new_sessions[ip] = RateLimit(per_minute / 60, capacity=per_minute)
        self._new_sessions.move_to_end(ip)
        while len(self._new_sessions) > MAX_TRACKED_ADDRESSES:
            self._new_sessions.popitem(last=False)  # the longest quiet: its bucket is full
        if not bucket.allow():
            logger.warning("refused a new session for %s: over %s a minute", ip, per_minute)
            raise LimitReached("too many new sessions from this address")

    def end_session(self, owner: str) -> None:
        """End every process of the session `owner` names (its old cookie is cut off)."""
        ended = [r for r in self.processes.values() if r.owner == owner]
        for record in ended:
            self._end(record)
        if ended:
            logger.info("session rotated: ended %s app process(es)", len(ended))

    def page_loaded(self, key: str) -> None:
        """The page is served: the process may be evicted, and a crowd's overshoot trimmed."""
        record = self.processes.get(key)
        if record is not None:
            record.loading_since = None
            self._enforce_cap(keep=key)

    def _replenish(self, launcher: Launcher) -> None:
        fqn = launcher.ref.fqn
        if self.spares_per_app > 0 and fqn not in self._replenishing:
            self._replenishing.add(fqn)
            self._spawn_task(self._fill_spares(launcher))

    async def _fill_spares(self, launcher: Launcher) -> None:
        fqn = launcher.ref.fqn
        try:
            while (
                len(self.spares.setdefault(fqn, [])) < self._spare_target()
                and self.launchers.get(fqn) is launcher
                and launcher.alive
                and not self._stopping.is_set()
            ):
                if self._live_total() >= self.max_processes and not self._end_one(keep=""):
                    break
                socket_path = self.server_dir.apps / f"spare-{next(self._spare_names)}.sock"
                pid = await self._launch(launcher, socket_path)
                record = AppProcessRecord("", pid, fqn, launcher.ref.version, socket_path, launcher)
                self.by_pid[pid] = record
                self._socket_owner[socket_path] = pid
                if self.launchers.get(fqn) is not launcher or self._stopping.is_set():
                    launcher.kill(pid)  # retired while it was forked: not a spare any more
                    break
                self.spares.setdefault(fqn, []).append(record)
        except LaunchError as exc:
            logger.warning("cannot fork a spare for %s: %s", fqn, exc)
        finally:
            self._replenishing.discard(fqn)

    def _spare_target(self) -> int:
        return min(self.spares_per_app, self.max_processes // 16)

    def _spare_total(self) -> int:
        return sum(len(spares) for spares in self.spares.values())

    def _live_total(self) -> int:
        """Processes that count toward the cap, forks under way included."""
        return len(self.processes) + self._spare_total() + self._launching

    async def _launch(self, launcher: Launcher, socket_path: Path) -> int:
        self._launching += 1
        try:
            return await launcher.launch(str(socket_path))
        finally:
            self._launching -= 1

    async def _launcher_for(self, ref: AppRef) -> Launcher:
        async with self._lock(f"app:{ref.fqn}"):
            launcher = self.launchers.get(ref.fqn)
            if launcher is not None and launcher.alive and launcher.ref.version >= ref.version:
                return launcher
            if launcher is not None:
                self._retire(launcher)
            launcher = make_launcher(self.start_method, ref, self.app_spec, self._process_exited)
            await launcher.start()
            self.launchers[ref.fqn] = launcher
            return launcher

    def _retire(self, launcher: Launcher) -> None:
        """An outdated template serves its running users until the last one ends."""
        del self.launchers[launcher.ref.fqn]
        for spare in self.spares.pop(launcher.ref.fqn, []):
            launcher.kill(spare.pid)
        launcher.retired = True
        if launcher.children:
            self.retired.append(launcher)
        else:
            self._spawn_task(launcher.close())

    def _enforce_cap(self, keep: str, incoming: int = 0) -> None:
        """Past the cap, end spares, then processes in eviction order (no error page)."""
        excess = self._live_total() + incoming - self.max_processes
        for spares in self.spares.values():
            while excess > 0 and spares:
                spare = spares.pop()
                spare.launcher.kill(spare.pid)
                excess -= 1
        while excess > 0 and self._end_one(keep=keep):
            excess -= 1

    def _end_one(self, keep: str) -> bool:
        """End the process that goes first at the cap (see _eviction_rank); False if none may."""
        candidates = [r for r in self.processes.values() if r.key != keep and r.evictable()]
        if not candidates:
            return False
        shares = collections.Counter(r.site for r in self.processes.values())
        record = min(candidates, key=lambda r: _eviction_rank(r, shares))
        logger.info("process cap %s reached: ending process %s", self.max_processes, record.pid)
        self._end(record)
        return True

    def _end(self, record: AppProcessRecord) -> None:
        if self.processes.get(record.key) is record:
            del self.processes[record.key]
        record.launcher.kill(record.pid)

    def _process_exited(self, pid: int) -> None:
        record = self.by_pid.pop(pid, None)
        if record is None:
            return
        spares = self.spares.get(record.fqn, [])
        if record in spares:
            spares.remove(record)
        if record.key and self.processes.get(record.key) is record:
            del self.processes[record.key]
        if self._socket_owner.get(record.socket) == pid:  # no newer process rebound the path
            del self._socket_owner[record.socket]
            with contextlib.suppress(FileNotFoundError):
                record.socket.unlink()
        launcher = record.launcher
        if launcher.retired and not launcher.children and launcher in self.retired:
            self.retired.remove(launcher)
            self._spawn_task(launcher.close())
        logger.debug("app process %s ended", pid)


def _eviction_rank(
    record: AppProcessRecord, shares: collections.Counter[str]
) -> tuple[bool, int, float]:
    """Lowest ends first: never engaged, then the largest address's, then least recently used."""
    engaged_at, used_at = usage(record.socket)
    return engaged_at > 0, -shares[record.site], used_at


def main() -> None:
    settings = json.loads(sys.argv[1])
    os.umask(0o077)
    log_to_stderr(settings.get("log_level", logging.WARNING))
    server_dir = ServerDir(Path(settings["server_dir"]))
    remove_stale_server_dirs(server_dir.root.parent)
    supervisor = Supervisor(server_dir, settings["master_pid"], settings)
    asyncio.run(supervisor.run(settings.get("ready_fd")))


if __name__ == "__main__":
    main()
