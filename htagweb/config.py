"""Config: every server option, checked and resolved in one place."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from .sessions import SessionStore, SQLiteStore
from .sessions.base import private_dir

START_METHODS = ("fork", "spawn")
MEMORY_PER_PROCESS_BUDGET = 16 * 1024 * 1024  # what the default process cap assumes per user


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 * 1024**3


@functools.cache
def default_max_processes() -> int:
    """Half the available memory, at MEMORY_PER_PROCESS_BUDGET per app process (read once
    per process, so that every Runner of a server gets the same)."""
    return max(8, available_memory() // 2 // MEMORY_PER_PROCESS_BUDGET)


def default_state_dir() -> Path:
    explicit = os.environ.get("HTAGWEB_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "htagweb"


@dataclass
class Config:
    debug: bool = False
    parano: bool = False
    http_only: bool = False
    timeout_interaction: float = 60
    timeout_inactivity: float = 0
    start_method: str | None = None  # None: HTAGWEB_START_METHOD, else "fork"
    max_processes: int | None = None
    secret_key: str | bytes | None = None
    session_cookie: str = "session"
    session_store: SessionStore | None = None
    state_dir: Path = field(default_factory=default_state_dir)

    def __post_init__(self) -> None:
        if self.start_method is None:  # an argument wins over the environment
            self.start_method = os.environ.get("HTAGWEB_START_METHOD", "fork")
        if self.start_method not in START_METHODS:
            raise ValueError(
                f"start_method must be one of {START_METHODS}, not {self.start_method!r}"
            )
        for name in ("timeout_interaction", "timeout_inactivity"):
            value = getattr(self, name)
            if value is None:
                value = 0
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
            setattr(self, name, float(value))
        if self.max_processes is None:
            self.max_processes = default_max_processes()
        elif not isinstance(self.max_processes, int) or self.max_processes < 1:
            raise ValueError(f"max_processes must be an integer >= 1, not {self.max_processes!r}")
        self.state_dir = Path(self.state_dir)
        if self.session_store is None:
            private_dir(self.state_dir)
            self.session_store = SQLiteStore(self.state_dir / "sessions.sqlite")
        elif not isinstance(self.session_store, SessionStore):
            raise ValueError(f"session_store must be a SessionStore, not {self.session_store!r}")
