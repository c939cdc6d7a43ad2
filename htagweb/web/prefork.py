"""`Runner.run(workers=N)`: a small pre-fork arbiter for uvicorn workers.

uvicorn can only start several workers from an import string; `run()` has an app
object, so this forks N workers after the app is built (like gunicorn --preload),
all accepting on one listening socket. The arbiter restarts a worker that dies, and
on SIGINT or SIGTERM stops them all and waits for them. Its pid is the server's
master pid, so every worker shares one supervisor (see htagweb.runtime).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from typing import Any

import uvicorn

from .. import runtime

logger = logging.getLogger(__name__)


class PreforkArbiter:
    def __init__(self, config: uvicorn.Config, listener: socket.socket, workers: int) -> None:
        self.config = config
        self.listener = listener
        self.workers = workers
        self.children: set[int] = set()
        self.stopping = False

    def run(self) -> None:
        runtime.set_master_pid(os.getpid())
        signal.signal(signal.SIGINT, self._handle_stop)
        signal.signal(signal.SIGTERM, self._handle_stop)
        for _ in range(self.workers):
            self._spawn_worker()
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in self.children:
                continue
            self.children.discard(pid)
            if not self.stopping:
                code = os.waitstatus_to_exitcode(status)
                logger.warning("worker %s exited (%s): starting another", pid, code)
                self._spawn_worker()
        self.listener.close()

    def _handle_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _spawn_worker(self) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                uvicorn.Server(self.config).run(sockets=[self.listener])
            except BaseException:
                logger.exception("worker %s failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        self.children.add(pid)


def serve_prefork(
    app: Any, host: str, port: int, workers: int, uvicorn_options: dict[str, Any]
) -> None:
    config = uvicorn.Config(app, host=host, port=port, **uvicorn_options)
    PreforkArbiter(config, config.bind_socket(), workers).run()
