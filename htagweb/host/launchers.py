"""How the supervisor starts app processes: forked from a warm template, or spawned.

Both launchers bind the app's listening socket before the process runs, so a
worker may connect as soon as `launch()` returns; requests wait in the kernel's
backlog until the app process accepts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, TypedDict, cast

from ..appref import AppRef
from ..wire.ipc import (
    MAX_FRAME_BYTES,
    FrameError,
    encode_frame,
    listen_unix,
    read_frame,
    write_frame,
)
from ..wire.messages import LaunchSpec, TemplateReport, TemplateRequest

logger = logging.getLogger(__name__)

TEMPLATE_START_TIMEOUT = 120.0


class AppSpec(TypedDict):
    """What every process of an app gets from the server (see LaunchSpec)."""

    sys_path: list[str]
    cwd: str
    log_level: int
    merge_memory: bool


class LaunchError(RuntimeError):
    """The app could not be started (its module failed to import, for instance)."""


class Launcher:
    """Starts and ends the processes of one app (one AppRef)."""

    def __init__(self, ref: AppRef, base_spec: AppSpec, on_exit: Callable[[int], None]) -> None:
        self.ref = ref
        self.base_spec: LaunchSpec = {
            **base_spec,
            "app": ref.to_json(),
            "parent_pid": os.getpid(),
        }
        self.on_exit = on_exit
        self.children: set[int] = set()
        self.retired = False  # replaced by a newer version; closes when its last child ends

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        """Get ready to launch (the fork launcher starts its template here)."""

    async def launch(self, socket_path: str) -> int:
        raise NotImplementedError

    def kill(self, pid: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _child_exited(self, pid: int) -> None:
        self.children.discard(pid)
        self.on_exit(pid)


async def _run_python(args: list[str], pass_fds: tuple[int, ...]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, pass_fds=pass_fds, stdin=asyncio.subprocess.DEVNULL
    )


class ForkLauncher(Launcher):
    """Owns a template process that forks app processes on request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[TemplateReport]] = {}
        self._next_rid = 0
        self._reader_task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._reader_task is not None and not self._reader_task.done()

    @property
    def template_pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        spec: LaunchSpec = {**self.base_spec, "channel_fd": theirs.fileno()}
        try:
            self._process = await _run_python(
                ["-m", "htagweb.host.template", "fork", json.dumps(spec)], (theirs.fileno(),)
            )
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_FRAME_BYTES)
        try:
            report = await asyncio.wait_for(read_frame(reader), TEMPLATE_START_TIMEOUT)
            error = _start_error(report)
        except asyncio.TimeoutError:
            error = f"importing the app took over {TEMPLATE_START_TIMEOUT:g}s"
        except FrameError as exc:
            error = f"template did not start: {exc}"
        if error:
            self._writer.close()
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()  # an import that never returns must not hold the app
            await self._process.wait()
            raise LaunchError(f"cannot start app {self.ref.fqn}: {error}")
        logger.info("template for %s ready (pid %s)", self.ref.fqn, self._process.pid)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(reader))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while (message := await read_frame(reader)) is not None:
                report = cast(TemplateReport, message)
                if report["kind"] == "exited":
                    self._child_exited(report["pid"])
                elif report["kind"] in ("forked", "fork_failed"):
                    future = self._pending.pop(report["rid"], None)
                    if future is not None and not future.done():
                        future.set_result(report)
        except (FrameError, ConnectionError) as exc:
            logger.warning("template channel of %s broke: %s", self.ref.fqn, exc)
        finally:
            # The template is gone, and its children died with it (PR_SET_PDEATHSIG).
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(LaunchError("template ended"))
            for pid in list(self.children):
                self._child_exited(pid)

    async def launch(self, socket_path: str) -> int:
        if not self.alive or self._writer is None:
            raise LaunchError(f"template of {self.ref.fqn} is not running")
        self._next_rid += 1
        future: asyncio.Future[TemplateReport] = asyncio.get_running_loop().create_future()
        self._pending[self._next_rid] = future
        await self._send({"op": "start", "rid": self._next_rid, "socket": socket_path})
        answer = await future
        if answer["kind"] != "forked":
            raise LaunchError(str(answer.get("error", "fork failed")))
        self.children.add(answer["pid"])
        return answer["pid"]

    async def _send(self, request: TemplateRequest) -> None:
        assert self._writer is not None
        await write_frame(self._writer, request)

    def kill(self, pid: int) -> None:
        if self._writer is not None and pid in self.children:
            kill: TemplateRequest = {"op": "kill", "pid": pid}
            with contextlib.suppress(ConnectionError, FrameError):
                self._writer.write(encode_frame(kill))

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(ConnectionError):
                await self._send({"op": "quit"})
        if self._process is not None:
            await self._process.wait()
        if self._reader_task is not None:
            await self._reader_task


def _start_error(report: Any) -> str | None:
    """Why a template's first report is not "ready"; None when it is."""
    if not isinstance(report, dict):
        return "template exited during start"
    if report.get("kind") != "ready":
        return str(report.get("error", "template did not say it was ready"))
    return None


class SpawnLauncher(Launcher):
    """Starts each app process as a new interpreter (no template; where fork is missing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._waiters: set[asyncio.Task[None]] = set()

    @property
    def alive(self) -> bool:
        return True

    async def launch(self, socket_path: str) -> int:
        listener = listen_unix(socket_path)
        ready_read, ready_write = os.pipe()
        spec: LaunchSpec = {
            **self.base_spec,
            "listen_fd": listener.fileno(),
            "ready_fd": ready_write,
        }
        try:
            process = await _run_python(
                ["-m", "htagweb.host.template", "spawn", json.dumps(spec)],
                (listener.fileno(), ready_write),
            )
        finally:
            listener.close()
            os.close(ready_write)
        try:  # "ok" once the app imported, else why not (a template reports it the same way)
            ready = await asyncio.to_thread(_read_all, ready_read)
        finally:
            os.close(ready_read)
        if ready != b"ok":
            await process.wait()
            error = ready.decode(errors="replace") or f"exited with code {process.returncode}"
            raise LaunchError(f"cannot start app {self.ref.fqn}: {error}")
        self._processes[process.pid] = process
        self.children.add(process.pid)
        waiter = asyncio.get_running_loop().create_task(self._wait(process))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        return process.pid

    async def _wait(self, process: asyncio.subprocess.Process) -> None:
        await process.wait()
        self._processes.pop(process.pid, None)
        self._child_exited(process.pid)

    def kill(self, pid: int) -> None:
        process = self._processes.get(pid)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        for pid in list(self._processes):
            self.kill(pid)
        if self._waiters:
            await asyncio.gather(*self._waiters, return_exceptions=True)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def make_launcher(
    start_method: str, ref: AppRef, base_spec: AppSpec, on_exit: Callable[[int], None]
) -> Launcher:
    if start_method == "spawn" or not hasattr(os, "fork"):
        return SpawnLauncher(ref, base_spec, on_exit)
    return ForkLauncher(ref, base_spec, on_exit)


class LauncherSet:
    """The launcher of each app's newest version, and retired ones until their last child
    ends (an outdated template serves its running users until then)."""

    def __init__(
        self,
        start_method: str,
        app_spec: AppSpec,
        on_exit: Callable[[int], None],
        on_retire: Callable[[str], None],
    ) -> None:
        self.start_method = start_method
        self.app_spec = app_spec
        self._on_exit = on_exit  # a process of any launcher ended: its pid
        self._on_retire = on_retire  # an app's launcher was replaced: its fqn
        self.current: dict[str, Launcher] = {}
        self.retired: list[Launcher] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def get(self, ref: AppRef) -> Launcher:
        """The running launcher of `ref`'s version or a newer one, started if needed."""
        async with self._locks.setdefault(ref.fqn, asyncio.Lock()):
            launcher = self.current.get(ref.fqn)
            if launcher is not None and launcher.alive and launcher.ref.version >= ref.version:
                return launcher
            if launcher is not None:
                self._retire(launcher)
            launcher = make_launcher(self.start_method, ref, self.app_spec, self._on_exit)
            await launcher.start()
            self.current[ref.fqn] = launcher
            return launcher

    def is_current(self, launcher: Launcher) -> bool:
        return self.current.get(launcher.ref.fqn) is launcher

    def _retire(self, launcher: Launcher) -> None:
        del self.current[launcher.ref.fqn]
        self._on_retire(launcher.ref.fqn)
        launcher.retired = True
        if launcher.children:
            self.retired.append(launcher)
        else:
            self._close_later(launcher)

    def child_exited(self, launcher: Launcher) -> None:
        if launcher.retired and not launcher.children and launcher in self.retired:
            self.retired.remove(launcher)
            self._close_later(launcher)

    def _close_later(self, launcher: Launcher) -> None:
        task = asyncio.get_running_loop().create_task(launcher.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def template_pids(self) -> list[int]:
        pids = (getattr(launcher, "template_pid", None) for launcher in self.current.values())
        return [pid for pid in pids if pid]

    async def close(self) -> None:
        launchers = [*self.current.values(), *self.retired]
        closing = [launcher.close() for launcher in launchers]
        await asyncio.gather(*closing, *self._closing, return_exceptions=True)
