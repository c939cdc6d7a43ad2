"""In-process tests of decisions the supervisor and app processes make, without servers.

What starts processes (the launchers) is replaced by a recorder: the process model itself
is tested with real servers elsewhere (tests/test_process_model.py, tests/test_attacks.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from htag import Tag

from htagweb.app.process import PAGES_REMEMBERED, AppProcess
from htagweb.appref import AppRef
from htagweb.host.launchers import Launcher
from htagweb.host.supervisor import AppProcessRecord, LimitReached, Supervisor
from htagweb.runtime import ServerDir, mark_used

REF = AppRef("tests.App", "tests", "App", None, 0)


class RecordingLauncher(Launcher):
    """Records what the supervisor ends, instead of ending processes."""

    def __init__(self) -> None:
        super().__init__(REF, {}, lambda pid: None)
        self.killed: list[int] = []

    def kill(self, pid: int) -> None:
        self.killed.append(pid)


@pytest.fixture
def supervisor(tmp_path: Path) -> Supervisor:
    settings = {"max_processes": 3, "sys_path": [], "cwd": str(tmp_path)}
    return Supervisor(ServerDir(tmp_path / "server"), os.getpid(), settings)


def add_process(
    supervisor: Supervisor,
    launcher: RecordingLauncher,
    pid: int,
    site: str,
    engaged_at: float,
    used_at: float,
) -> AppProcessRecord:
    """A process as the supervisor knows it, its use clock set as its app process would."""
    socket = supervisor.server_dir.root / f"{pid}.sock"
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.touch()
    os.utime(socket, (engaged_at, used_at))
    record = AppProcessRecord(f"key{pid}", pid, REF.fqn, 0, socket, launcher)
    record.client_ip = record.site = site
    supervisor.processes[record.key] = record
    return record


def test_at_the_cap_a_process_nobody_engaged_with_goes_first(supervisor):
    launcher = RecordingLauncher()
    now = time.time()
    add_process(supervisor, launcher, 1, "192.0.2.1", engaged_at=now - 100, used_at=now - 100)
    add_process(supervisor, launcher, 2, "198.51.100.7", engaged_at=0, used_at=now)
    add_process(supervisor, launcher, 3, "198.51.100.7", engaged_at=now, used_at=now)
    assert supervisor._end_one(keep="")
    assert launcher.killed == [2]  # the newest, but never clicked nor connected


def test_then_the_site_holding_the_most_processes_gives_up_its_least_recently_used(supervisor):
    launcher = RecordingLauncher()
    now = time.time()
    add_process(supervisor, launcher, 1, "192.0.2.1", engaged_at=now - 100, used_at=now - 100)
    add_process(supervisor, launcher, 2, "198.51.100.7", engaged_at=now - 5, used_at=now - 5)
    add_process(supervisor, launcher, 3, "198.51.100.7", engaged_at=now, used_at=now)
    assert supervisor._end_one(keep="")
    assert launcher.killed == [2]  # not 1, the oldest: its site holds one process only
    assert supervisor._end_one(keep="key3")
    assert launcher.killed == [2, 1]  # the page being loaded (keep) is never the one ended


def test_a_page_being_loaded_is_not_evicted(supervisor):
    launcher = RecordingLauncher()
    record = add_process(supervisor, launcher, 1, "192.0.2.1", engaged_at=0, used_at=0)
    record.loading_since = time.monotonic()
    assert not supervisor._end_one(keep="")
    assert launcher.killed == []


def test_the_use_clock_keeps_engagement_apart_from_use(tmp_path):
    socket = tmp_path / "app.sock"
    socket.touch()
    mark_used(socket, engaged_at=0)
    assert os.stat(socket).st_atime == 0 and os.stat(socket).st_mtime > 0


def test_per_address_admission(supervisor):
    launcher = RecordingLauncher()
    add_process(supervisor, launcher, os.getpid(), "192.0.2.1", engaged_at=0, used_at=0)
    limits: dict[str, Any] = {"ip": "192.0.2.1", "max_processes": 2}
    supervisor._admit_new_process(limits)  # one live: a second may start
    supervisor._starting["192.0.2.1"] += 1  # one more being forked counts as well
    with pytest.raises(LimitReached, match="too many apps"):
        supervisor._admit_new_process(limits)
    sessions = {"ip": "192.0.2.9", "new_sessions_per_minute": 3}
    for _ in range(3):  # a whole minute's worth at once
        supervisor._admit_new_session(sessions)
    with pytest.raises(LimitReached, match="too many new sessions"):
        supervisor._admit_new_session(sessions)


class Empty(Tag.div):
    pass


def test_an_interaction_sent_again_gets_its_answer_not_a_second_run():
    app = AppProcess(Empty, "unused.sock")
    app._remember("tab", 5, {"update": {"1": "<b>5</b>"}})
    assert app._answer_of("tab", 5) == {"update": {"1": "<b>5</b>"}, "seq": 5}
    assert app._answer_of("tab", 4) == {"seq": 4}  # older: answered, applied long ago
    assert app._answer_of("tab", 6) is None  # new: to run
    assert app._answer_of("other", 5) is None  # numbers are per page
    assert app._answer_of("tab", "5") is None  # not numbered by htagweb's client


def test_only_the_most_recent_pages_are_remembered():
    app = AppProcess(Empty, "unused.sock")
    for n in range(PAGES_REMEMBERED + 1):
        app._remember(f"page{n}", 1, {})
    assert app._answer_of("page0", 1) is None
    assert app._answer_of(f"page{PAGES_REMEMBERED}", 1) == {"seq": 1}
