"""In-process tests of decisions the supervisor and app processes make, without servers.

What starts processes (the launchers) is replaced by a recorder: the process model itself
is tested with real servers elsewhere (tests/test_process_model.py, tests/test_attacks.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from htag import Tag

from htagweb.app.pages import PAGES_REMEMBERED
from htagweb.app.process import AppProcess
from htagweb.appref import AppRef
from htagweb.host.admission import LimitReached
from htagweb.host.launchers import Launcher
from htagweb.host.memory import MemoryFloor
from htagweb.host.processes import AppProcesses
from htagweb.host.records import AppProcessRecord
from htagweb.host.supervisor import Supervisor
from htagweb.runtime import ServerDir
from htagweb.web.gateway import Gateway

REF = AppRef("tests.App", "tests", "App", None, 0)


class RecordingLauncher(Launcher):
    """Records what the supervisor starts and ends, instead of starting and ending
    processes: a "launched" process is a pid from 1000 up and an empty socket file."""

    def __init__(self) -> None:
        spec: Any = {"sys_path": [], "cwd": "", "log_level": 0, "merge_memory": False}
        super().__init__(REF, spec, lambda pid: None)
        self.launched: list[int] = []
        self.killed: list[int] = []

    @property
    def alive(self) -> bool:
        return True

    async def launch(self, socket_path: str) -> int:
        Path(socket_path).touch()
        self.launched.append(1000 + len(self.launched))
        return self.launched[-1]

    def kill(self, pid: int) -> None:
        self.killed.append(pid)


@pytest.fixture
def processes(tmp_path: Path) -> AppProcesses:
    """The app processes of a supervisor that starts none (see RecordingLauncher)."""
    settings: Any = {"max_processes": 3, "sys_path": [], "cwd": str(tmp_path)}
    return Supervisor(ServerDir(tmp_path / "server"), os.getpid(), settings).processes


def add_process(
    processes: AppProcesses,
    launcher: RecordingLauncher,
    pid: int,
    site: str,
    engaged_at: float,
    used_at: float,
) -> AppProcessRecord:
    """A process as the supervisor knows it, its use clock set as workers' notices would."""
    socket = processes.server_dir.root / f"{pid}.sock"
    record = AppProcessRecord(f"key{pid}", pid, REF.fqn, 0, socket, launcher)
    record.client_ip = record.site = site
    record.engaged_at, record.used_at = engaged_at, used_at
    processes.by_key[record.key] = record
    return record


def test_at_the_cap_a_process_nobody_engaged_with_goes_first(processes):
    launcher = RecordingLauncher()
    now = time.monotonic()
    add_process(processes, launcher, 1, "192.0.2.1", engaged_at=now - 100, used_at=now - 100)
    add_process(processes, launcher, 2, "198.51.100.7", engaged_at=0, used_at=now)
    add_process(processes, launcher, 3, "198.51.100.7", engaged_at=now, used_at=now)
    assert processes.evict_one(keep="")
    assert launcher.killed == [2]  # the newest, but never clicked nor connected


def test_then_the_site_holding_the_most_processes_gives_up_its_least_recently_used(processes):
    launcher = RecordingLauncher()
    now = time.monotonic()
    add_process(processes, launcher, 1, "192.0.2.1", engaged_at=now - 100, used_at=now - 100)
    add_process(processes, launcher, 2, "198.51.100.7", engaged_at=now - 5, used_at=now - 5)
    add_process(processes, launcher, 3, "198.51.100.7", engaged_at=now, used_at=now)
    assert processes.evict_one(keep="")
    assert launcher.killed == [2]  # not 1, the oldest: its site holds one process only
    assert processes.evict_one(keep="key3")
    assert launcher.killed == [2, 1]  # the page being loaded (keep) is never the one ended


def test_a_page_being_loaded_is_not_evicted(processes):
    launcher = RecordingLauncher()
    record = add_process(processes, launcher, 1, "192.0.2.1", engaged_at=0, used_at=0)
    record.loading_since = time.monotonic()
    assert not processes.evict_one(keep="")
    assert launcher.killed == []


def test_the_use_clock_keeps_engagement_apart_from_use(processes):
    record = add_process(processes, RecordingLauncher(), 1, "192.0.2.1", engaged_at=0, used_at=0)
    processes.note_use(record.key, engaged=False)  # a page load
    assert record.engaged_at == 0 and record.used_at > 0
    processes.note_use(record.key, engaged=True)  # a click, or a page connecting
    assert record.engaged_at == record.used_at > 0


class RecordingSupervisor:
    """Records the notices a worker sends, instead of sending them."""

    def __init__(self) -> None:
        self.notices: list[dict[str, Any]] = []
        self.closed = False

    def notify(self, message: dict[str, Any]) -> None:
        self.notices.append(message)

    def close(self) -> None:
        self.closed = True


def test_a_worker_tells_the_first_use_at_once_then_at_most_once_a_second(monkeypatch):
    from htagweb.web import gateway as gateway_module

    clock = [100.0]
    monkeypatch.setattr(gateway_module.time, "monotonic", lambda: clock[0])
    gateway = Gateway({"start_method": "fork", "max_processes": 8})
    recorder = RecordingSupervisor()
    gateway.supervisor = recorder  # type: ignore[assignment]
    gateway._note_use("a")
    gateway._note_use("a")
    gateway._note_use("b")
    assert recorder.notices == [
        {"op": "used", "key": "a", "engaged": True},
        {"op": "used", "key": "b", "engaged": True},
    ]
    clock[0] += 1.0
    gateway._note_use("a")
    assert len(recorder.notices) == 3


def test_per_address_admission(processes):
    launcher = RecordingLauncher()
    add_process(processes, launcher, os.getpid(), "192.0.2.1", engaged_at=0, used_at=0)
    limits: dict[str, Any] = {"ip": "192.0.2.1", "max_processes": 2}
    admission = processes.admission
    admission.admit_new_process(limits)  # one live: a second may start
    # One more being forked counts as well.
    with admission.forking("192.0.2.1"), pytest.raises(LimitReached, match="too many apps"):
        admission.admit_new_process(limits)
    admission.admit_new_process(limits)  # forked and ended: a second may start again
    sessions: Any = {"ip": "192.0.2.9", "new_sessions_per_minute": 3}
    for _ in range(3):  # a whole minute's worth at once
        admission.admit_new_session(sessions)
    with pytest.raises(LimitReached, match="too many new sessions"):
        admission.admit_new_session(sessions)


class Empty(Tag.div):
    pass


def test_an_interaction_sent_again_gets_its_answer_not_a_second_run():
    pages = AppProcess(Empty).pages
    pages.remember("tab", 5, {"update": {"1": "<b>5</b>"}})
    assert pages.answer_of("tab", 5) == {"update": {"1": "<b>5</b>"}, "seq": 5}
    assert pages.answer_of("tab", 4) == {"seq": 4}  # older: answered, applied long ago
    assert pages.answer_of("tab", 6) is None  # new: to run
    assert pages.answer_of("other", 5) is None  # numbers are per page
    assert pages.answer_of("tab", "5") is None  # not numbered by htagweb's client


def test_only_the_most_recent_pages_are_remembered():
    pages = AppProcess(Empty).pages
    for n in range(PAGES_REMEMBERED + 1):
        pages.remember(f"page{n}", 1, {})
    assert pages.answer_of("page0", 1) is None
    assert pages.answer_of(f"page{PAGES_REMEMBERED}", 1) == {"seq": 1}


def started_with(processes: AppProcesses, launcher: RecordingLauncher) -> AppProcesses:
    processes.launchers.current[REF.fqn] = launcher
    processes.server_dir.create()
    return processes


async def settle() -> None:
    """Let the tasks the supervisor started (refilling spares) run to their end."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_new_user_takes_a_spare_and_the_spares_are_refilled(processes):
    launcher = RecordingLauncher()
    processes.max_processes, processes.spares_per_app = 64, 2

    async def scenario() -> None:
        started_with(processes, launcher)
        processes.replenish(launcher)
        await settle()
        assert [r.pid for r in processes.spares[REF.fqn]] == [1000, 1001]
        record = await processes.ensure(REF, "user", stale=False, client=None, owner="o")
        assert record.pid == 1001 and record.socket == processes.server_dir.app_socket("user")
        assert record.socket.exists()  # the spare's socket, renamed to the user's name
        await settle()
        assert [r.pid for r in processes.spares[REF.fqn]] == [1000, 1002]
        assert await processes.ensure(REF, "user", False, None, "o") is record  # no new one

    asyncio.run(scenario())
    assert launcher.killed == []


def test_at_the_cap_a_new_user_ends_the_process_that_goes_first(processes):
    launcher = RecordingLauncher()
    now = time.monotonic()
    add_process(processes, launcher, 1, "192.0.2.1", engaged_at=now - 50, used_at=now - 50)
    add_process(processes, launcher, 2, "192.0.2.2", engaged_at=now - 90, used_at=now - 90)
    add_process(processes, launcher, 3, "192.0.2.3", engaged_at=now, used_at=now)
    processes.spares_per_app = 0  # a cap of 3 keeps none anyway

    async def scenario() -> None:
        started_with(processes, launcher)
        record = await processes.ensure(REF, "new", stale=False, client=None, owner="o")
        assert record.pid == 1000

    asyncio.run(scenario())
    assert launcher.killed == [2]  # the least recently used; the cap of 3 holds
    assert sorted(processes.by_key) == ["key1", "key3", "new"]


def test_under_the_memory_reserve_each_new_user_replaces_one_and_no_spare_is_made(processes):
    launcher = RecordingLauncher()
    now = time.monotonic()
    available = [8 << 30]
    processes.memory = MemoryFloor(1 << 30, read=lambda: available[0])
    processes.max_processes, processes.spares_per_app = 64, 2
    add_process(processes, launcher, 1, "192.0.2.1", engaged_at=now - 50, used_at=now - 50)
    add_process(processes, launcher, 2, "192.0.2.2", engaged_at=now - 90, used_at=now - 90)

    async def scenario() -> None:
        started_with(processes, launcher)
        await processes.ensure(REF, "plenty", stale=False, client=None, owner="o")
        await settle()
        assert launcher.killed == [] and len(processes.spares[REF.fqn]) == 2
        for spare in processes.spares.pop(REF.fqn):  # the spares are used up by others
            processes.by_pid.pop(spare.pid)
        available[0] = 512 << 20  # under the reserve of 1 GiB
        record = await processes.ensure(REF, "short", stale=False, client=None, owner="o")
        await settle()
        assert record.key == "short" and launcher.killed == [2]  # one in, one out
        assert processes.spares[REF.fqn] == []  # no user's process makes room for a spare

    asyncio.run(scenario())
    assert sorted(processes.by_key) == ["key1", "plenty", "short"]


def test_a_malformed_notice_is_logged_and_the_worker_keeps_its_connection(tmp_path, caplog):
    settings: Any = {"max_processes": 3, "sys_path": [], "cwd": str(tmp_path)}
    supervisor = Supervisor(ServerDir(tmp_path / "server"), os.getpid(), settings)
    supervisor._take_notice({"op": "used"})  # type: ignore[typeddict-item]  # no key
    assert "supervisor notice 'used' failed" in caplog.text


def test_the_templates_rehearsal_serves_its_page_through_the_request_loop(monkeypatch):
    from htagweb.app import process

    served: list[str] = []
    original = AppProcess._dispatch

    async def recording(self: AppProcess, message: Any, writer: Any) -> Any:
        served.append(message["op"])
        reply = await original(self, message, writer)
        assert reply["kind"] in ("page", "actions"), reply  # nothing refused or failed
        return reply

    monkeypatch.setattr(AppProcess, "_dispatch", recording)
    process.rehearse(rounds=2)
    assert served == ["render", "interact", "render", "interact"]


def test_the_use_notice_throttle_stays_bounded(monkeypatch):
    from htagweb.web import gateway as gateway_module

    clock = [100.0]
    monkeypatch.setattr(gateway_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(gateway_module, "USE_NOTICES_PRUNED_AT", 10)
    gateway = Gateway({"start_method": "fork", "max_processes": 8})
    gateway.supervisor = RecordingSupervisor()  # type: ignore[assignment]
    for n in range(9):
        gateway._note_use(f"old{n}")
    clock[0] += 5.0  # all of those are past the interval now
    for n in range(25):  # more recent keys than the bound, all in the same second
        gateway._note_use(f"new{n}")
        assert len(gateway._use_noticed) <= 10
    assert len(gateway.supervisor.notices) == 9 + 25  # each told once, none held back
