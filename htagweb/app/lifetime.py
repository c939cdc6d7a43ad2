"""When an app process ends: tag.exit(), inactivity, or an interaction past its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)


class Lifetime:
    """The app process ends when `done` is set; `busy` says a request is being handled
    (the process then ends once it is answered)."""

    def __init__(self, busy: Callable[[], bool]) -> None:
        self.done = asyncio.Event()
        self.exit_requested = False
        self.timeout_interaction = 0.0  # seconds an interaction or a render may run
        self.timeout_inactivity = 0.0  # seconds without a request before the process ends
        self._busy = busy
        self._last_activity = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def deadline(self) -> Iterator[None]:
        """Run the app's code under the interaction deadline: past it, SIGALRM's default
        action ends the process (the only way to stop runaway synchronous code)."""
        seconds = self.timeout_interaction
        if seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            if seconds > 0:
                signal.setitimer(signal.ITIMER_REAL, 0)

    def request_exit(self) -> None:
        """tag.exit(): end the process once the current answer is sent."""
        self.exit_requested = True
        if not self._busy():
            self.done.set()

    def note_activity(self) -> None:
        self._last_activity = time.monotonic()

    def schedule_idle_check(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.timeout_inactivity <= 0:
            return
        remaining = self._last_activity + self.timeout_inactivity - time.monotonic()
        if remaining <= 0 and not self._busy():
            logger.info("app process %s idle for %ss: ending", os.getpid(), self.timeout_inactivity)
            self.done.set()
            return
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(max(remaining, 0.05), self.schedule_idle_check)
