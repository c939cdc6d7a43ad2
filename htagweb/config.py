"""Config: every server option, checked and resolved once, then read everywhere.

An argument wins over the environment; the environment fills what no argument gives:

    HTAGWEB_START_METHOD  start_method ("fork", or "spawn" where fork is unsafe)
    HTAGWEB_STATE_DIR     state_dir (else $XDG_STATE_HOME/htagweb, ~/.local/state/htagweb)
    HTAGWEB_SECRET_KEY    secret_key (else a key kept in state_dir)
    HTAGWEB_MERGE_MEMORY  merge_memory ("1": app processes' identical pages are merged)

(HTAGWEB_HOST, HTAGWEB_PORT and HTAGWEB_RUNTIME_DIR are read where a server starts: by
Runner.run() and htagweb.runtime.) What the supervisor and the app processes need is
derived from it here: supervisor_settings() once per server, app_options() per page load.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .machine import total_memory
from .sessions import SessionStore, SQLiteStore
from .sessions.base import private_dir
from .wire.messages import AppOptions
from .wire.protocol import MAX_INTERACTION_BYTES

START_METHODS = ("fork", "spawn")
MIB = 1024 * 1024
# The default process cap counts what no app process goes under (about 4.8 MB idle, half a
# megabyte once its pages are merged: bench/): memory is what stops new processes first,
# through the reserve below; the count only bounds the other things a process holds.
MEMORY_PER_PROCESS_FLOOR = 2 * MIB
# The default memory reserve: a tenth of the machine, within these bounds. Past it, every
# new app process replaces the least recently used one instead of adding to the total.
MEMORY_RESERVE_BOUNDS = (256 * MIB, 4096 * MIB)
# Per client address, defaults that a crowd behind one proxy does not reach: past them a
# page load gets 429, a WebSocket or event stream is refused.
DEFAULT_NEW_SESSIONS_PER_IP = 600.0  # a minute, bursts of as many
DEFAULT_CONNECTIONS_PER_SESSION = 32  # open WebSockets and event streams, per worker
DEFAULT_CONNECTIONS_PER_IP = 512


# Read once per process, so that every Runner of a server gets the same.
@functools.cache
def default_max_processes() -> int:
    """The machine's memory at MEMORY_PER_PROCESS_FLOOR per app process."""
    return max(8, total_memory() // MEMORY_PER_PROCESS_FLOOR)


@functools.cache
def default_memory_reserve() -> int:
    """A tenth of the machine's memory, within MEMORY_RESERVE_BOUNDS."""
    low, high = MEMORY_RESERVE_BOUNDS
    return min(high, max(low, total_memory() // 10))


def default_state_dir() -> Path:
    explicit = os.environ.get("HTAGWEB_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "htagweb"


@dataclass(frozen=True)
class Config:
    """The options of a Runner (see its docstring for what each does), resolved."""

    debug: bool = False
    parano: bool = False
    http_only: bool = False
    timeout_interaction: float = 60
    timeout_inactivity: float = 0
    start_method: str | None = None  # None: HTAGWEB_START_METHOD, else "fork"
    max_processes: int | None = None  # None: from the machine's memory
    memory_reserve: int | None = None  # bytes; None: a tenth of the machine's; 0: none
    merge_memory: bool | None = None  # None: HTAGWEB_MERGE_MEMORY, else off
    # None: HTAGWEB_SECRET_KEY, else one kept on disk; never shown in a repr (logs, tracebacks)
    secret_key: str | bytes | None = field(default=None, repr=False)
    session_cookie: str = "session"
    session_cookie_path: str = "/"
    session_store: SessionStore | None = None  # None: SQLite in state_dir
    state_dir: Path = field(default_factory=default_state_dir)
    allowed_origins: Iterable[str] = ()
    interactions_per_second: float = 200
    heartbeat: float = 25
    max_message_bytes: int = MAX_INTERACTION_BYTES
    max_processes_per_ip: int = 0
    new_sessions_per_ip: float = DEFAULT_NEW_SESSIONS_PER_IP
    max_connections_per_session: int = DEFAULT_CONNECTIONS_PER_SESSION
    max_connections_per_ip: int = DEFAULT_CONNECTIONS_PER_IP
    dev_reload: bool = False

    def __post_init__(self) -> None:
        resolved = dict(
            start_method=self.start_method or os.environ.get("HTAGWEB_START_METHOD", "fork"),
            timeout_interaction=_seconds("timeout_interaction", self.timeout_interaction),
            timeout_inactivity=_seconds("timeout_inactivity", self.timeout_inactivity),
            max_processes=_max_processes(self.max_processes),
            memory_reserve=_memory_reserve(self.memory_reserve),
            merge_memory=_merge_memory(self.merge_memory),
            secret_key=self.secret_key or os.environ.get("HTAGWEB_SECRET_KEY") or None,
            state_dir=Path(self.state_dir),
            allowed_origins=frozenset(o.rstrip("/").lower() for o in self.allowed_origins),
            interactions_per_second=_at_least_zero(
                "interactions_per_second", self.interactions_per_second
            ),
            heartbeat=_at_least_zero("heartbeat", self.heartbeat),
            max_message_bytes=int(self.max_message_bytes),
            max_processes_per_ip=int(self.max_processes_per_ip),
            new_sessions_per_ip=float(self.new_sessions_per_ip),
            max_connections_per_session=int(self.max_connections_per_session),
            max_connections_per_ip=int(self.max_connections_per_ip),
        )
        if resolved["start_method"] not in START_METHODS:
            raise ValueError(
                f"start_method must be one of {START_METHODS}, not {resolved['start_method']!r}"
            )
        if self.max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be > 0")
        per_address = (
            "max_processes_per_ip",
            "new_sessions_per_ip",
            "max_connections_per_session",
            "max_connections_per_ip",
        )
        for name in per_address:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: no limit)")
        for name, value in resolved.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "session_store", self._store())

    def _store(self) -> SessionStore:
        if self.session_store is None:
            private_dir(self.state_dir)
            return SQLiteStore(self.state_dir / "sessions.sqlite")
        if not isinstance(self.session_store, SessionStore):
            raise ValueError(f"session_store must be a SessionStore, not {self.session_store!r}")
        return self.session_store

    @property
    def store(self) -> SessionStore:
        assert self.session_store is not None  # resolved in __post_init__
        return self.session_store

    def supervisor_settings(self) -> dict[str, Any]:
        """What the server's supervisor is started with (one supervisor per server)."""
        return {
            "start_method": self.start_method,
            "max_processes": self.max_processes,
            "memory_reserve": self.memory_reserve,
            "merge_memory": self.merge_memory,
        }

    def app_options(
        self,
        parano: bool | None = None,
        timeout_interaction: float | None = None,
        timeout_inactivity: float | None = None,
    ) -> AppOptions:
        """How an app process serves a page load; handle() may override some per route."""
        return {
            "debug": self.debug,
            "parano": self.parano if parano is None else parano,
            "timeout_interaction": _seconds(
                "timeout_interaction",
                self.timeout_interaction if timeout_interaction is None else timeout_interaction,
            ),
            "timeout_inactivity": _seconds(
                "timeout_inactivity",
                self.timeout_inactivity if timeout_inactivity is None else timeout_inactivity,
            ),
            "interactions_per_second": self.interactions_per_second,
        }


def _seconds(name: str, value: Any) -> float:
    if value is None:
        value = 0
    if not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _at_least_zero(name: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be >= 0 (0: off), not {value!r}")
    return float(value)


def _max_processes(value: Any) -> int:
    if value is None:
        return default_max_processes()
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"max_processes must be an integer >= 1, not {value!r}")
    return value


def _memory_reserve(value: Any) -> int:
    if value is None:
        return default_memory_reserve()
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"memory_reserve must be a number of bytes >= 0, not {value!r}")
    return value


def _merge_memory(value: Any) -> bool:
    if value is None:
        text = os.environ.get("HTAGWEB_MERGE_MEMORY", "").strip().lower()
        if text in ("", "0", "false", "no", "off"):
            return False
        if text in ("1", "true", "yes", "on"):
            return True
        raise ValueError(f"HTAGWEB_MERGE_MEMORY must be 1 or 0, not {text!r}")
    if not isinstance(value, bool):
        raise ValueError(f"merge_memory must be True or False, not {value!r}")
    return value


# The supervisor settings of this process's Runners: a server has one supervisor, so a
# Runner asking for other ones would silently get the first one's.
_supervisor_settings: dict[str, Any] | None = None


def one_supervisor(config: Config) -> dict[str, Any]:
    """The supervisor settings of `config`: ValueError if another Runner of this process
    asked for different ones."""
    global _supervisor_settings
    settings = config.supervisor_settings()
    if _supervisor_settings is None:
        _supervisor_settings = settings
    elif settings != _supervisor_settings:
        raise ValueError(
            f"this server already has a Runner with {_supervisor_settings}, and a server has "
            "one supervisor: give every Runner the same start_method, max_processes, "
            f"memory_reserve and merge_memory, not {settings}"
        )
    return settings
