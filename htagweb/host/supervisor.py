"""The per-host supervisor: owner of every app process of one server.

Web workers come and go (gunicorn recycles them, one may be SIGKILLed); the
supervisor stays, so users' apps survive them. It lives exactly as long as the
server's master process: when the master ends it ends every app process, its
templates, and removes the runtime directory.

Workers ask it over supervisor.sock (framed JSON, the SupervisorRequest and
SupervisorReply types of htagweb.wire.messages):

    ensure {app, key, owner, stale, client}   a live process for this (session, app)
                                  -> started {socket, pid}, or limited {reason}
    loaded {key}                  its page was served (a notice): it may now be evicted
    used {key, engaged}           a page used it (a notice): the eviction order's clock
    prepare {app}                 start the app's template and spares before its first user
    kill {key}                    end that process (an interaction ran past its deadline)
    end_session {owner}           end every process of a session (its cookie was rotated),
                                  answered once they are gone
    status                        what runs, for tests, benchmarks and operators

Any request may get error {error} instead. What it does with processes (spares, the cap,
eviction) is in htagweb.host.processes; how they start, in htagweb.host.launchers.

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
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from ..appref import AppRef
from ..machine import raise_open_files_limit
from ..runtime import ServerDir, log_to_stderr, process_alive, remove_stale_server_dirs
from ..wire.ipc import MAX_FRAME_BYTES, FrameError, encode_frame, read_frame
from ..wire.messages import (
    SupervisorCall,
    SupervisorNotice,
    SupervisorReply,
    SupervisorSettings,
)
from . import memory
from .admission import LimitReached
from .launchers import AppSpec, LaunchError, LauncherSet
from .processes import DEFAULT_SPARES_PER_APP, AppProcesses

logger = logging.getLogger(__name__)

MASTER_POLL_INTERVAL = 1.0  # only where pidfd_open is missing


class Supervisor:
    """The supervisor's loop: serves workers' requests until the master ends or a signal."""

    def __init__(
        self, server_dir: ServerDir, master_pid: int, settings: SupervisorSettings
    ) -> None:
        self.server_dir = server_dir
        self.master_pid = master_pid
        app_spec: AppSpec = {
            "sys_path": settings["sys_path"],
            "cwd": settings["cwd"],
            "log_level": settings.get("log_level", logging.WARNING),
            "merge_memory": settings.get("merge_memory", False),
        }
        if app_spec["merge_memory"]:
            memory.warn_unless_merging()
        self.launchers = LauncherSet(
            settings.get("start_method", "fork"),
            app_spec,
            on_exit=self._process_exited,
            on_retire=lambda fqn: self.processes.drop_spares(fqn),
        )
        self.processes = AppProcesses(
            server_dir,
            self.launchers,
            int(settings["max_processes"]),
            int(settings.get("spares_per_app", DEFAULT_SPARES_PER_APP)),
            self._spawn_task,
            memory.MemoryFloor(int(settings.get("memory_reserve", 0))),
        )
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifetime ------------------------------------------------------------------------

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
        self.processes.stopping = True
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
        await self.launchers.close()
        for task in self._tasks:
            task.cancel()
        self.server_dir.remove()
        logger.info("supervisor %s stopped", os.getpid())

    def _spawn_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _process_exited(self, pid: int) -> None:
        record = self.processes.exited(pid)
        if record is not None:
            self.launchers.child_exited(record.launcher)

    # -- requests from workers -----------------------------------------------------------

    async def _serve_worker(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while (message := await read_frame(reader)) is not None:
                if not isinstance(message, dict):
                    raise FrameError("a request is a JSON object")
                if message.get("op") in ("loaded", "used"):  # nothing to answer
                    self._take_notice(cast(SupervisorNotice, message))
                else:
                    self._spawn_task(self._answer(cast(SupervisorCall, message), writer))
        except (FrameError, ConnectionError) as exc:
            logger.debug("worker connection dropped: %s", exc)
        finally:
            writer.close()

    def _take_notice(self, notice: SupervisorNotice) -> None:
        try:
            if notice["op"] == "loaded":
                self.processes.page_loaded(notice["key"])
            else:
                self.processes.note_use(notice["key"], bool(notice["engaged"]))
        except Exception:  # a notice is a hint: the worker's connection stays
            logger.exception("supervisor notice %r failed", notice.get("op"))

    async def _answer(self, request: SupervisorCall, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._dispatch(request)
        except LaunchError as exc:
            reply = {"kind": "error", "error": str(exc)}
        except LimitReached as exc:
            reply = {"kind": "limited", "reason": str(exc)}
        except Exception as exc:
            logger.exception("supervisor request %r failed", request.get("op"))
            reply = {"kind": "error", "error": f"supervisor error: {exc}"}
        if "rid" in request:
            reply["rid"] = request["rid"]
        with contextlib.suppress(ConnectionError):
            writer.write(encode_frame(reply))
            await writer.drain()

    async def _dispatch(self, request: SupervisorCall) -> SupervisorReply:
        if request["op"] == "ensure":
            started = await self.processes.ensure(
                AppRef.from_json(request["app"]),
                request["key"],
                request["stale"],
                request["client"],
                request["owner"],
            )
            return {"kind": "started", "socket": str(started.socket), "pid": started.pid}
        if request["op"] == "end_session":
            ended = await self.processes.end_session(request["owner"])
            if ended:
                logger.info("session rotated: ended %s app process(es)", ended)
            return {"kind": "ok"}
        if request["op"] == "prepare":
            launcher = await self.launchers.get(AppRef.from_json(request["app"]))
            self.processes.replenish(launcher)
            return {"kind": "ok"}
        if request["op"] == "kill":
            self.processes.kill(request["key"])
            return {"kind": "ok"}
        if request["op"] == "status":
            return self.status()
        return {"kind": "error", "error": f"unknown op {request.get('op')!r}"}

    def status(self) -> SupervisorReply:
        processes = self.processes
        return {
            "kind": "status",
            "pid": os.getpid(),
            "processes": [
                {"key": r.key, "pid": r.pid, "fqn": r.fqn} for r in processes.by_key.values()
            ],
            "templates": self.launchers.template_pids(),
            "spares": [r.pid for spares in processes.spares.values() for r in spares],
            "max_processes": processes.max_processes,
            "memory_reserve": processes.memory.reserve,
        }


def main() -> None:
    settings = cast(SupervisorSettings, json.loads(sys.argv[1]))
    os.umask(0o077)
    log_to_stderr(settings.get("log_level", logging.WARNING))
    raise_open_files_limit()
    server_dir = ServerDir(Path(settings["server_dir"]))
    remove_stale_server_dirs(server_dir.root.parent)
    supervisor = Supervisor(server_dir, settings["master_pid"], settings)
    asyncio.run(supervisor.run(settings.get("ready_fd")))


if __name__ == "__main__":
    main()
