"""The app processes of one host: who runs for which (session, app), the spares, the cap.

Each app keeps a few spare processes, forked ahead and already serving on a spare
socket: a new user's process is a spare whose socket is renamed to the user's name,
so the fork and the process's start-up are off the page load's path. Spares count
toward the process cap: at the cap, refilling them ends a process ahead of the next
user (a small cap, under 16 per spare, keeps no spares).

What ends at the cap (see records.eviction_rank): first a process no page ever engaged
with (loaded, never clicked nor connected: what an anonymous flood of page loads
makes), then the least recently used process of the client site holding the most
processes (an IPv4 address, an IPv6 /48).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ..appref import AppRef
from ..limits import site_of
from ..runtime import ServerDir, process_running
from ..wire.messages import ClientLimits
from .admission import Admission
from .launchers import Launcher, LaunchError, LauncherSet
from .memory import MemoryFloor
from .records import AppProcessRecord, first_to_end

logger = logging.getLogger(__name__)

DEFAULT_SPARES_PER_APP = 2
# Seconds a rotation waits for the old session's processes to be gone (a SIGKILLed process
# goes within milliseconds); a process still there after it is logged, not waited for.
END_SESSION_WAIT = 2.0


class AppProcesses:
    """Starts, hands out and ends the app processes of one host, under its cap."""

    def __init__(
        self,
        server_dir: ServerDir,
        launchers: LauncherSet,
        max_processes: int,
        spares_per_app: int,
        spawn_task: Callable[[Coroutine[Any, Any, None]], None],
        memory: MemoryFloor | None = None,
    ) -> None:
        self.server_dir = server_dir
        self.launchers = launchers
        self.max_processes = max_processes
        self.spares_per_app = spares_per_app
        self._spawn_task = spawn_task
        self.memory = memory or MemoryFloor(0)
        self.by_key: dict[str, AppProcessRecord] = {}  # users' processes
        self.by_pid: dict[int, AppProcessRecord] = {}  # every process, spares included
        self.spares: dict[str, list[AppProcessRecord]] = {}  # by app fqn
        self.admission = Admission(self._live_processes_of)
        self.stopping = False
        self._spare_names = itertools.count()
        self._replenishing: set[str] = set()
        self._launching = 0
        # Which process answers at each socket path: a path rebound to a new process is
        # not removed when the old one's end is reported.
        self._socket_owner: dict[Path, int] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._exits: dict[int, asyncio.Future[None]] = {}  # pids a rotation waits to see go

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    # -- users' processes --------------------------------------------------------------

    async def ensure(
        self, ref: AppRef, key: str, stale: bool, client: ClientLimits | None, owner: str
    ) -> AppProcessRecord:
        """The live process of `key`, started (or restarted when stale or outdated).

        Past a per-address limit of `client`, LimitReached. `owner` names the session
        (see end_session).
        """
        async with self._lock(key):
            if client and client.get("new_session"):
                self.admission.admit_new_session(client)
            record = self.by_key.get(key)
            # Versions only move forward: workers that imported the app before a deploy
            # must not bring the old code back.
            if record is not None and (stale or record.version < ref.version):
                self.end(record)
                record = None
            if record is not None:
                record.note_use(engaged=False)
                return record
            address = client["ip"] if client else ""
            if client:
                self.admission.admit_new_process(client)
            with self.admission.forking(address):
                return await self._start(ref, key, address, owner)

    async def _start(self, ref: AppRef, key: str, address: str, owner: str) -> AppProcessRecord:
        """A process for `key`: a spare taken over, or a new fork (under the key's lock)."""
        launcher = await self.launchers.get(ref)
        socket_path = self.server_dir.app_socket(key)
        spares = self.spares.get(ref.fqn)
        if spares:
            record = spares.pop()
            record.socket.replace(socket_path)  # atomic: it answers at the user's name now
            self._socket_owner.pop(record.socket, None)
            record.key, record.socket = key, socket_path
        else:
            self.enforce_cap(keep=key, incoming=1)
            self._socket_owner[socket_path] = 0  # being rebound: an old owner's end keeps it
            pid = await self._launch(launcher, socket_path)
            record = AppProcessRecord(key, pid, ref.fqn, ref.version, socket_path, launcher)
            self.by_pid[pid] = record
        self._socket_owner[socket_path] = record.pid
        record.client_ip, record.site, record.owner = address, site_of(address), owner
        record.loading_since = time.monotonic()
        record.note_use(engaged=False)  # the most recently used, never engaged
        self.by_key[key] = record
        self.replenish(launcher)
        logger.debug("app process %s serves %s", record.pid, ref.fqn)
        return record

    def _live_processes_of(self, ip: str) -> int:
        # Checked in /proc: the report that a process ended may still be on its way.
        return sum(r.client_ip == ip and process_running(r.pid) for r in self.by_key.values())

    def page_loaded(self, key: str) -> None:
        """The page is served: the process may be evicted, and a crowd's overshoot trimmed."""
        record = self.by_key.get(key)
        if record is not None:
            record.loading_since = None
            self.enforce_cap(keep=key)

    def note_use(self, key: str, engaged: bool) -> None:
        record = self.by_key.get(key)
        if record is not None:
            record.note_use(engaged)

    async def end_session(self, owner: str, wait: float = END_SESSION_WAIT) -> int:
        """End every process of the session `owner` names, and return once they are gone
        (or `wait` seconds passed); how many there were.

        Awaited because workers rely on it: once a rotation's response starts, nothing the
        old token reached answers any more (see htagweb.sessions.token_cache).
        """
        ended = [r for r in self.by_key.values() if r.owner == owner]
        loop = asyncio.get_running_loop()
        gone = {r.pid: self._exits.setdefault(r.pid, loop.create_future()) for r in ended}
        for record in ended:
            self.end(record)
        if not gone:
            return 0
        try:
            _, late = await asyncio.wait(gone.values(), timeout=wait)
        finally:
            for pid in gone:
                self._exits.pop(pid, None)
        if late:
            logger.warning("%s process(es) of a rotated session outlived %ss", len(late), wait)
        return len(ended)

    def kill(self, key: str) -> None:
        record = self.by_key.get(key)
        if record is not None:
            self.end(record)

    # -- spares --------------------------------------------------------------------------

    def replenish(self, launcher: Launcher) -> None:
        fqn = launcher.ref.fqn
        if self.spares_per_app > 0 and fqn not in self._replenishing:
            self._replenishing.add(fqn)
            self._spawn_task(self._fill_spares(launcher))

    async def _fill_spares(self, launcher: Launcher) -> None:
        fqn = launcher.ref.fqn
        try:
            while self._wants_spare(launcher):
                if self.memory.short():  # no user's process makes room for a spare
                    break
                if self.live_total() >= self.max_processes and not self.evict_one(keep=""):
                    break
                socket_path = self.server_dir.apps / f"spare-{next(self._spare_names)}.sock"
                pid = await self._launch(launcher, socket_path)
                record = AppProcessRecord("", pid, fqn, launcher.ref.version, socket_path, launcher)
                self.by_pid[pid] = record
                self._socket_owner[socket_path] = pid
                if not self.launchers.is_current(launcher) or self.stopping:
                    launcher.kill(pid)  # retired while it was forked: not a spare any more
                    break
                self.spares.setdefault(fqn, []).append(record)
        except LaunchError as exc:
            logger.warning("cannot fork a spare for %s: %s", fqn, exc)
        finally:
            self._replenishing.discard(fqn)

    def _wants_spare(self, launcher: Launcher) -> bool:
        spares = self.spares.setdefault(launcher.ref.fqn, [])
        target = min(self.spares_per_app, self.max_processes // 16)
        return (
            len(spares) < target
            and self.launchers.is_current(launcher)
            and launcher.alive
            and not self.stopping
        )

    def drop_spares(self, fqn: str) -> None:
        """End the spares of an app whose template is retired (a newer version came)."""
        for spare in self.spares.pop(fqn, []):
            spare.launcher.kill(spare.pid)

    # -- the cap -------------------------------------------------------------------------

    def live_total(self) -> int:
        """Processes that count toward the cap, forks under way included."""
        spares = sum(len(spares) for spares in self.spares.values())
        return len(self.by_key) + spares + self._launching

    async def _launch(self, launcher: Launcher, socket_path: Path) -> int:
        self._launching += 1
        try:
            return await launcher.launch(str(socket_path))
        finally:
            self._launching -= 1

    def enforce_cap(self, keep: str, incoming: int = 0) -> None:
        """Past the cap, end spares, then processes in eviction order (no error page).

        Under the memory reserve, the incoming process replaces one: what an ended process
        frees shows only once it has exited, so ending more now would overshoot.
        """
        excess = self.live_total() + incoming - self.max_processes
        if incoming and self.memory.short():
            excess = max(excess, incoming)
        for spares in self.spares.values():
            while excess > 0 and spares:
                spare = spares.pop()
                spare.launcher.kill(spare.pid)
                excess -= 1
        while excess > 0 and self.evict_one(keep=keep):
            excess -= 1

    def evict_one(self, keep: str) -> bool:
        """End the process that goes first at the cap; False if none may."""
        record = first_to_end(self.by_key.values(), keep)
        if record is None:
            return False
        logger.info(
            "process cap reached (%s processes, or the memory reserve): ending process %s",
            self.max_processes,
            record.pid,
        )
        self.end(record)
        return True

    def end(self, record: AppProcessRecord) -> None:
        if self.by_key.get(record.key) is record:
            del self.by_key[record.key]
        record.launcher.kill(record.pid)

    def exited(self, pid: int) -> AppProcessRecord | None:
        """A process ended (reported by its launcher): forget it and its socket."""
        waiting = self._exits.pop(pid, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)
        record = self.by_pid.pop(pid, None)
        if record is None:
            return None
        spares = self.spares.get(record.fqn, [])
        if record in spares:
            spares.remove(record)
        if record.key and self.by_key.get(record.key) is record:
            del self.by_key[record.key]
        if self._socket_owner.get(record.socket) == pid:  # no newer process rebound the path
            del self._socket_owner[record.socket]
            with contextlib.suppress(FileNotFoundError):
                record.socket.unlink()
        logger.debug("app process %s ended", pid)
        return record
