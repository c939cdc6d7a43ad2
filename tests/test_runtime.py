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
    ],
)
def test_bad_options_are_refused_clearly(options, monkeypatch):
    monkeypatch.delenv("HTAGWEB_START_METHOD", raising=False)
    with pytest.raises(ValueError, match=next(iter(options))):
        Config(**options)


def test_default_process_cap_follows_memory(monkeypatch):
    from htagweb import config

    monkeypatch.setattr(config, "available_memory", lambda: 4 * 1024**3)
    assert Config().max_processes == 128  # half of 4 GiB at 16 MiB per process
    monkeypatch.setattr(config, "available_memory", lambda: 64 * 1024**2)
    assert Config().max_processes == 8  # never below 8
