"""The warm template: a process that imported htag and one app, and forks users' processes.

Forking from it costs a few milliseconds and little private memory, because the
child shares every page the template already holds (htag, the app's module, the
app-process loop). The template imports nothing of the web stack.

The supervisor talks to it over a socketpair with framed JSON (the TemplateRequest and
TemplateReport types of htagweb.wire.messages):

    <- ready {pid} once the app is imported, or failed {error}
    -> start {rid, socket}    <- forked {rid, pid}, or fork_failed {rid, error}
    -> kill {pid}             only a child of its own, not yet reaped
    -> quit                   ends every child, then the template
    <- exited {pid, status}   whenever a child ends

`python -m htagweb.host.template spawn SPEC` runs one app process without a template:
the path for platforms without fork, selectable on Linux with start_method="spawn".
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import cast

from htag import Tag

from .. import appref
from ..app import guard, inert
from ..app import process as appprocess
from ..runtime import log_to_stderr
from ..wire.ipc import FrameBuffer, encode_frame, listen_unix
from ..wire.messages import LaunchSpec, TemplateReport, TemplateRequest
from . import memory

logger = logging.getLogger(__name__)


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when our parent dies (Linux), so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        memory.prctl()(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def prepare_interpreter(spec: LaunchSpec) -> type[Tag]:
    """Make this fresh interpreter look like the web worker's, then load the app."""
    die_with_parent(spec["parent_pid"])
    os.umask(0o077)
    sys.path[:] = spec["sys_path"]
    os.chdir(spec["cwd"])
    log_to_stderr(spec.get("log_level", logging.WARNING))
    if spec.get("merge_memory"):
        memory.merge_this_process()  # before the app's import: its pages are merged too
    inert.activate()
    guard.record_bindings()
    return appref.load(appref.AppRef.from_json(spec["app"]))


class ForkServer:
    """The template's loop: forks app processes on request and reports their ends."""

    def __init__(self, channel: socket.socket, tag_class: type[Tag]) -> None:
        self.channel = channel
        self.tag_class = tag_class
        self.children: dict[int, str] = {}
        self.frames = FrameBuffer()
        self.selector = selectors.DefaultSelector()
        self.wake_read, self.wake_write = os.pipe()

    def send(self, message: TemplateReport) -> None:
        self.channel.sendall(encode_frame(message))

    def serve_forever(self) -> None:
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the supervisor says quit
        self.selector.register(self.channel, selectors.EVENT_READ, "channel")
        self.selector.register(self.wake_read, selectors.EVENT_READ, "signal")
        while True:
            for key, _ in self.selector.select():
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_read, 4096)
                    self.reap()
                    continue
                data = self.channel.recv(1 << 16)
                if not data:
                    self.quit()
                    return
                for message in self.frames.feed(data):
                    if message.get("op") == "quit":
                        self.quit()
                        return
                    self.handle(cast(TemplateRequest, message))

    def handle(self, message: TemplateRequest) -> None:
        if message["op"] == "start":
            rid = message["rid"]
            try:
                pid = self.fork_app(message["socket"])
            except OSError as exc:
                self.send({"kind": "fork_failed", "rid": rid, "error": str(exc)})
            else:
                self.send({"kind": "forked", "rid": rid, "pid": pid})
        elif message["op"] == "kill":
            victim = message.get("pid")
            # Only our own children, not yet reaped: never a pid the system reused.
            if isinstance(victim, int) and victim in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)

    def fork_app(self, socket_path: str) -> int:
        # Bound before the fork: connections queue in the kernel from this instant,
        # so the supervisor can answer "ready" as soon as it has the pid.
        listener = listen_unix(socket_path)
        template_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                self.selector.close()
                os.close(self.wake_read)
                os.close(self.wake_write)
                self.channel.close()
                die_with_parent(template_pid)
                code = appprocess.run(self.tag_class, listener)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        listener.close()
        self.children[pid] = socket_path
        return pid

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            status_code = os.waitstatus_to_exitcode(status)
            self.send({"kind": "exited", "pid": pid, "status": status_code})

    def quit(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()


def main_template(spec: LaunchSpec) -> int:
    channel = socket.socket(fileno=spec["channel_fd"])
    try:
        tag_class = prepare_interpreter(spec)
    except BaseException as exc:
        failed: TemplateReport = {"kind": "failed", "error": _describe(exc)}
        channel.sendall(encode_frame(failed))
        return 1
    try:
        appprocess.rehearse()  # what every app process runs is warm before it is shared
    except Exception:  # only memory is at stake: the template serves without it
        logger.warning("the template's rehearsal failed", exc_info=True)
    # Objects that exist now are shared with every child: keep the collector from
    # touching (and so copying) their pages.
    gc.collect()
    gc.freeze()
    ready: TemplateReport = {"kind": "ready", "pid": os.getpid()}
    channel.sendall(encode_frame(ready))
    ForkServer(channel, tag_class).serve_forever()
    return 0


def main_spawned(spec: LaunchSpec) -> int:
    listener = socket.socket(fileno=spec["listen_fd"])
    ready_fd = spec["ready_fd"]
    try:
        tag_class = prepare_interpreter(spec)
    except BaseException as exc:
        os.write(ready_fd, _describe(exc).encode())
        return 1
    os.write(ready_fd, b"ok")
    os.close(ready_fd)
    return appprocess.run(tag_class, listener)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


if __name__ == "__main__":
    mode, spec_text = sys.argv[1], sys.argv[2]
    spec = json.loads(spec_text)
    sys.exit(main_template(spec) if mode == "fork" else main_spawned(spec))
