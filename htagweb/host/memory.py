"""The host's memory: the reserve the process cap keeps free, and merging app processes'
identical pages (Linux KSM).

A forked app process shares its template's pages until it writes to them, and merely
using an object writes to its page (its reference count): about 4 MB of each process
are such copies (bench/dirty_pages.py), nearly all identical from one process to the
next. With merge_memory, the template asks the kernel to merge identical pages of it and
of every process it forks (prctl PR_SET_MEMORY_MERGE, Linux >= 6.4); the kernel's KSM
daemon does it when the operator runs it (/sys/kernel/mm/ksm/run = 1). Off by default:
merged pages let a process tell, by how long a write takes, whether another process
holds a page with the same content, a side channel between users (see the README).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..machine import available_memory

logger = logging.getLogger(__name__)

KSM_RUN = Path("/sys/kernel/mm/ksm/run")
PR_SET_MEMORY_MERGE = 67


class MemoryFloor:
    """Says when the machine's available memory is under the reserve (0: never)."""

    def __init__(self, reserve: int, read: Callable[[], int] = available_memory) -> None:
        self.reserve = reserve
        self._read = read

    def short(self) -> bool:
        return self.reserve > 0 and self._read() < self.reserve


@functools.cache
def prctl() -> Any:
    """libc's prctl, looked up once: in the template, so that forked children share it."""
    return ctypes.CDLL(None, use_errno=True).prctl


def merge_this_process() -> bool:
    """Mark this process's memory, and that of the processes it forks, as mergeable."""
    if not sys.platform.startswith("linux"):
        return False
    if prctl()(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0:
        logger.warning(
            "merge_memory: the kernel refused (%s); it needs Linux 6.4 or later",
            os.strerror(ctypes.get_errno()),
        )
        return False
    return True


def warn_unless_merging() -> None:
    """merge_memory was asked for: say so if the kernel will not merge anything."""
    try:
        running = KSM_RUN.read_text().strip() == "1"
    except OSError:
        running = False
    if not running:
        logger.warning(
            "merge_memory is on but the kernel's KSM is not running (%s is not 1): app "
            "processes will not share their identical pages",
            KSM_RUN,
        )
