"""What this machine has: its memory, and how many files a process may open.

Read by the Config (default caps), the supervisor (its memory reserve) and each server
process at start (its open-files limit).
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def _meminfo(field_name: str, sysconf_name: str) -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith(field_name):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf(sysconf_name) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 * 1024**3


def available_memory() -> int:
    """What the kernel could give without swapping (MemAvailable), in bytes."""
    return _meminfo("MemAvailable:", "SC_AVPHYS_PAGES")


def total_memory() -> int:
    return _meminfo("MemTotal:", "SC_PHYS_PAGES")


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the new soft limit.

    A web worker holds a connection to each app process it talks to and the supervisor a
    pidfd or pipe for each: the common soft limit of 1,024 would end a host at about a
    thousand users, long before its memory does. The hard limit is the operator's.
    """
    try:
        import resource
    except ImportError:  # not a Unix: nothing to raise
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Linux refuses an infinite limit on open files (fs.nr_open bounds it).
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open files limit from %s: %s", soft, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
