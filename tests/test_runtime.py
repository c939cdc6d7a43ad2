"""The runtime directory: private, hashed names, stale directories cleaned."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from htagweb.config import Config
from htagweb.runtime import (
    RuntimeDirError,
    ServerDir,
    app_key,
    ensure_private_dir,
    remove_stale_server_dirs,
)


def test_server_dir_is_private(tmp_path):
    server_dir = ServerDir.for_master(os.getpid(), base=tmp_path / "rt")
    server_dir.create()
    for path in (tmp_path / "rt", server_dir.root, server_dir.apps):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    server_dir.remove()
    assert not (tmp_path / "rt").exists()


def test_a_shared_runtime_dir_is_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o777)
    os.chmod(open_dir, 0o777)
    with pytest.raises(RuntimeDirError):
        ensure_private_dir(open_dir)


def test_app_key_is_a_hash_not_client_text():
    key = app_key("../../etc/passwd", "x.App")
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    assert key != app_key("../../etc/passwd", "y.App")


def test_stale_server_dirs_are_removed_but_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = ServerDir.for_master(os.getpid(), base=tmp_path)
    stale = ServerDir.for_master(dead.pid, base=tmp_path)
    live.create()
    stale.create()
    (tmp_path / "not-ours").mkdir()
    assert remove_stale_server_dirs(tmp_path) == [stale.root]
    assert live.root.exists() and (tmp_path / "not-ours").exists()


@pytest.mark.parametrize(
    "options",
    [
        {"start_method": "thread"},
        {"timeout_interaction": -1},
        {"timeout_inactivity": "5"},
        {"max_processes": 0},
        {"memory_reserve": -1},
        {"memory_reserve": "2G"},
        {"merge_memory": "yes"},
    ],
)
def test_bad_options_are_refused_clearly(options, monkeypatch):
    monkeypatch.delenv("HTAGWEB_START_METHOD", raising=False)
    with pytest.raises(ValueError, match=next(iter(options))):
        Config(**options)


def test_default_process_cap_and_reserve_follow_memory(monkeypatch, tmp_path):
    from htagweb import config

    def machine(total: int) -> None:
        monkeypatch.setattr(config, "total_memory", lambda: total)
        config.default_max_processes.cache_clear()  # read once per process: read again here
        config.default_memory_reserve.cache_clear()

    monkeypatch.setenv("HTAGWEB_STATE_DIR", str(tmp_path))
    machine(4 * 1024**3)
    assert Config().max_processes == 2048  # 4 GiB at 2 MiB per process
    assert Config().memory_reserve == 4 * 1024**3 // 10
    machine(12 * 1024**2)
    assert Config().max_processes == 8  # never below 8
    assert Config().memory_reserve == 256 * 1024**2  # never below 256 MiB
    machine(256 * 1024**3)
    assert Config().memory_reserve == 4 * 1024**3  # never above 4 GiB
    assert Config(memory_reserve=0).memory_reserve == 0
    config.default_max_processes.cache_clear()
    config.default_memory_reserve.cache_clear()


def test_merge_memory_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HTAGWEB_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("HTAGWEB_MERGE_MEMORY", raising=False)
    assert Config().merge_memory is False
    monkeypatch.setenv("HTAGWEB_MERGE_MEMORY", "1")
    assert Config().merge_memory is True
    assert Config(merge_memory=False).merge_memory is False
    monkeypatch.setenv("HTAGWEB_MERGE_MEMORY", "maybe")
    with pytest.raises(ValueError, match="HTAGWEB_MERGE_MEMORY"):
        Config()


def test_an_argument_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HTAGWEB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HTAGWEB_START_METHOD", "spawn")
    assert Config(start_method="fork").start_method == "fork"
    assert Config().start_method == "spawn"
    monkeypatch.delenv("HTAGWEB_START_METHOD")
    assert Config().start_method == "fork"


def test_runners_of_one_server_must_agree_on_their_supervisor(monkeypatch, tmp_path):
    from htagweb import Runner, config

    monkeypatch.setenv("HTAGWEB_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(config, "_supervisor_settings", None)
    first = Runner()
    Runner()  # the default cap is read once per process: the same for every Runner
    Runner(max_processes=first.config.max_processes)
    with pytest.raises(ValueError, match="one supervisor"):
        Runner(max_processes=first.config.max_processes + 1)
    with pytest.raises(ValueError, match="start_method"):
        Runner(start_method="spawn")


def test_the_secret_key_never_shows_in_the_config(monkeypatch, tmp_path):
    monkeypatch.setenv("HTAGWEB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("HTAGWEB_SECRET_KEY", "from-the-environment")
    assert "from-the-environment" not in repr(Config())
    assert "given-as-argument" not in repr(Config(secret_key="given-as-argument"))
    assert Config().secret_key == "from-the-environment"  # read, just not shown


def test_a_misspelt_runner_option_is_named(monkeypatch, tmp_path):
    from htagweb import Runner

    monkeypatch.setenv("HTAGWEB_STATE_DIR", str(tmp_path))
    with pytest.raises(TypeError, match="unknown options: max_procesess"):
        Runner(max_procesess=3)


def test_a_server_process_raises_its_open_files_limit_to_the_hard_one():
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = "from htagweb.machine import raise_open_files_limit; print(raise_open_files_limit())"
    lowered = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        capture_output=True,
        text=True,
        check=True,
    )
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert int(lowered.stdout) == wanted
