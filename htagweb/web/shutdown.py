"""Knowing that the server is stopping, to end the responses that would otherwise hold it.

When uvicorn stops, it waits for every open HTTP response to end, and a Server-Sent
Events stream never ends by itself. uvicorn, its `--workers` children and gunicorn's
uvicorn workers all stop on SIGINT or SIGTERM: a handler chained in front of theirs
sets an event that the streams watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import weakref
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_events: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
    weakref.WeakKeyDictionary()
)


def stopping_event() -> asyncio.Event:
    """An event set when this process is told to stop (one per event loop)."""
    loop = asyncio.get_running_loop()
    event = _events.get(loop)
    if event is None:
        event = _events[loop] = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                _chain(signum, loop, event)
        else:  # signals only reach the main thread: streams then end with their client
            logger.debug("not in the main thread: streams will not see the server stop")
    return event


def _chain(signum: int, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    previous = signal.getsignal(signum)

    def handle(received: int, frame: FrameType | None) -> None:
        try:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)
        finally:
            _call_previous(previous, received, frame)

    signal.signal(signum, handle)


def _call_previous(previous: Any, signum: int, frame: FrameType | None) -> None:
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
