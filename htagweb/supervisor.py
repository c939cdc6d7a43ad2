"""The per-host supervisor: owner of every app process of one server.

Web workers come and go (gunicorn recycles them, one may be SIGKILLed); the
supervisor stays, so users' apps survive them. It lives exactly as long as the
server's master process: when the master ends it ends every app process, its
templates, and removes the runtime directory.

Workers ask it, over supervisor.sock, with framed JSON (htagweb.ipc):

    ensure   {app, key, stale}  a live process for this (session, app) -> {socket, pid}
    prepare  {app}              start the app's template ahead of its first user
    kill     {key}              end that process (an interaction ran past its deadline)
    status   {}                 what runs, for tests and benchmarks

Signals: SIGTERM, SIGINT and SIGHUP stop it, like its master's end does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .appref import AppRef
from .ipc import MAX_FRAME_BYTES, FrameError, encode_frame, read_frame
from .launchers import Launcher, LaunchError, make_launcher
from .runtime import ServerDir, log_to_stderr, process_alive, remove_stale_server_dirs

logger = logging.getLogger(__name__)

MASTER_POLL_INTERVAL = 1.0  # only where pidfd_open is missing


@dataclass
class AppProcessRecord:
    key: str
    pid: int
    fqn: str
    version: int
    socket: Path
    launcher: Launcher


class Supervisor:
    def __init__(self, server_dir: ServerDir, master_pid: int, settings: dict[str, Any]) -> None:
        self.server_dir = server_dir
        self.master_pid = master_pid
        self.start_method: str = settings.get("start_method", "fork")
        self.max_processes: int = int(settings["max_processes"])
        self.app_spec = {
            "sys_path": settings["sys_path"],
            "cwd": settings["cwd"],
            "log_level": settings.get("log_level", logging.WARNING),
        }
        self.processes: dict[str, AppProcessRecord] = {}
        self.by_pid: dict[int, AppProcessRecord] = {}
        self.launchers: dict[str, Launcher] = {}
        self.retired: list[Launcher] = []
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
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
        try:
            reply = await self._dispatch(message)
        except LaunchError as exc:
            reply = {"error": str(exc)}
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
                AppRef.from_json(message["app"]), message["key"], bool(message.get("stale"))
            )
            return {"socket": str(started.socket), "pid": started.pid}
        if op == "prepare":
            await self._launcher_for(AppRef.from_json(message["app"]))
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
            "max_processes": self.max_processes,
        }

    # -- app processes -------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def ensure(self, ref: AppRef, key: str, stale: bool) -> AppProcessRecord:
        """The live process of `key`, started (or restarted when stale or outdated)."""
        async with self._lock(key):
            record = self.processes.get(key)
            if record is not None and (stale or record.version != ref.version):
                self._end(record)
                record = None
            if record is not None:
                return record
            launcher = await self._launcher_for(ref)
            self._make_room(for_key=key)
            socket_path = self.server_dir.app_socket(key)
            pid = await launcher.launch(str(socket_path))
            record = AppProcessRecord(key, pid, ref.fqn, ref.version, socket_path, launcher)
            self.processes[key] = record
            self.by_pid[pid] = record
            logger.debug("app process %s started for %s", pid, ref.fqn)
            return record

    async def _launcher_for(self, ref: AppRef) -> Launcher:
        async with self._lock(f"app:{ref.fqn}"):
            launcher = self.launchers.get(ref.fqn)
            if launcher is not None and launcher.alive and launcher.ref.version == ref.version:
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
        launcher.retired = True
        if launcher.children:
            self.retired.append(launcher)
        else:
            self._spawn_task(launcher.close())

    def _make_room(self, for_key: str) -> None:
        """Past the cap, end the least recently used processes (never an error page)."""
        excess = len(self.processes) - self.max_processes + 1
        if excess <= 0:
            return
        candidates = [r for r in self.processes.values() if r.key != for_key]
        candidates.sort(key=_last_used)
        for record in candidates[:excess]:
            logger.info(
                "process cap %s reached: ending LRU app process %s", self.max_processes, record.pid
            )
            self._end(record)

    def _end(self, record: AppProcessRecord) -> None:
        if self.processes.get(record.key) is record:
            del self.processes[record.key]
        record.launcher.kill(record.pid)

    def _process_exited(self, pid: int) -> None:
        record = self.by_pid.pop(pid, None)
        if record is None:
            return
        current = self.processes.get(record.key)
        if current is record:
            del self.processes[record.key]
        if current is None or current is record:  # a newer process did not rebind the path
            with contextlib.suppress(FileNotFoundError):
                record.socket.unlink()
        launcher = record.launcher
        if launcher.retired and not launcher.children and launcher in self.retired:
            self.retired.remove(launcher)
            self._spawn_task(launcher.close())
        logger.debug("app process %s ended", pid)


def _last_used(record: AppProcessRecord) -> float:
    try:
        return record.socket.stat().st_mtime
    except OSError:
        return 0.0


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
