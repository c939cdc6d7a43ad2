"""Where a server keeps its sockets: a private runtime directory with hashed names.

Layout, one directory per running server (identified by its master process):

    <base>/<master pid>-<master start time>/
        supervisor.sock   the supervisor's socket (workers connect here)
        supervisor.pid
        lock              taken by the worker that starts the supervisor
        apps/<hash>.sock  one socket per (session, app) process

Everything is created 0700/0600; names under apps/ are hashes, never client input.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Set by htagweb's own pre-fork runner so that its workers share one supervisor.
_explicit_master_pid: int | None = None


class RuntimeDirError(RuntimeError):
    """The runtime directory exists but is not private to this user."""


def set_master_pid(pid: int) -> None:
    global _explicit_master_pid
    _explicit_master_pid = pid


def server_master_pid() -> int:
    """The process whose lifetime is the server's: workers of one server agree on it."""
    if _explicit_master_pid is not None:
        return _explicit_master_pid
    if "gunicorn.arbiter" in sys.modules:  # a gunicorn worker: the arbiter forked us
        return os.getppid()
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:  # uvicorn --workers / --reload
        return parent.pid
    return os.getpid()


def _stat_fields(pid: int) -> list[bytes]:
    """The fields of /proc/<pid>/stat after the command name; [] where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return stat_file.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_start_time(pid: int) -> str:
    """The kernel's start time of `pid` (guards against pid reuse); "" where unknown."""
    fields = _stat_fields(pid)
    return fields[19].decode() if len(fields) > 19 else ""


def process_running(pid: int) -> bool:
    """Whether `pid` runs: not ended, and not a zombie waiting for its parent."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in (b"Z", b"X")


def process_alive(pid: int, start_time: str = "") -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start_time or process_start_time(pid) == start_time


def base_dir() -> Path:
    explicit = os.environ.get("HTAGWEB_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / "htagweb"
    return Path(tempfile.gettempdir()) / f"htagweb-{os.getuid()}"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` 0700, or check that an existing one is ours and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeDirError(f"{path} is not a directory owned by uid {os.getuid()}")
    if info.st_mode & 0o077:
        raise RuntimeDirError(f"{path} is readable by other users (mode {info.st_mode & 0o777:o})")
    return path


def app_key(session_id: str, fqn: str) -> str:
    """The name of the (session, app) process: a hash, so nothing on disk is client text."""
    return hashlib.sha256(f"{session_id}\0{fqn}".encode()).hexdigest()[:32]


def session_owner(session_id: str) -> str:
    """What the supervisor knows of a session: a hash naming all its app processes."""
    return hashlib.sha256(f"owner\0{session_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ServerDir:
    """The runtime directory of one server."""

    root: Path

    @classmethod
    def for_master(cls, pid: int, base: Path | None = None) -> ServerDir:
        start = process_start_time(pid)
        name = f"{pid}-{start}" if start else str(pid)
        return cls((base or base_dir()) / name)

    @property
    def supervisor_socket(self) -> Path:
        return self.root / "supervisor.sock"

    @property
    def supervisor_pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    @property
    def apps(self) -> Path:
        return self.root / "apps"

    def app_socket(self, key: str) -> Path:
        return self.apps / f"{key}.sock"

    def create(self) -> None:
        ensure_private_dir(self.root.parent)
        ensure_private_dir(self.root)
        ensure_private_dir(self.apps)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):  # the shared base goes when no server is left in it
            self.root.parent.rmdir()

    def master_alive(self) -> bool:
        pid_text, _, start = self.root.name.partition("-")
        return pid_text.isdigit() and process_alive(int(pid_text), start)


def remove_stale_server_dirs(base: Path | None = None) -> list[Path]:
    """Delete directories left by servers whose master is gone (after a SIGKILL)."""
    removed: list[Path] = []
    base = base or base_dir()
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid_text, _, start = entry.name.partition("-")
        if not (pid_text.isdigit() and (start == "" or start.isdigit())):
            continue  # not a server directory of ours
        if entry.is_dir() and not ServerDir(entry).master_alive():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def log_to_stderr(level: int) -> None:
    """Entry points of our own child processes (supervisor, template) log like the worker.

    They are programs htagweb starts on the user's behalf, so their "htagweb" records
    go to stderr at the level the web worker's "htagweb" logger had.
    """
    import logging

    htagweb_logger = logging.getLogger("htagweb")
    htagweb_logger.setLevel(level)
    if not htagweb_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s [%(process)d] %(name)s: %(message)s"))
        htagweb_logger.addHandler(handler)
        htagweb_logger.propagate = False
