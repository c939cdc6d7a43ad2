"""Inert stand-ins for the server classes, used inside app processes.

An app's module often runs `WebServer(App).run()` at import time, with no
`if __name__ == "__main__"` guard. Templates and spawned app processes import that
module to get the class, so there `htagweb.WebServer` & co resolve to `InertServer`:
constructing it, `.run()` or `.add_route()` do nothing, and the web stack is never
imported into the processes every user pays memory for.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

active = False


def activate() -> None:
    global active
    active = True


def _ignore(*args: Any, **kwargs: Any) -> Any:
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]  # used as a decorator: hand the function back
    return _ignore


class InertServer:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def run(self, *args: Any, **kwargs: Any) -> None:
        logger.debug("run() ignored: this is an app process, not a web server")

    def __getattr__(self, name: str) -> Any:
        return _ignore
