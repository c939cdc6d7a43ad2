"""htagweb: the production web host for htag apps.

from htagweb import WebServer
WebServer(App).run()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "2.0.0.dev0"
__all__ = ["AppServer", "Runner", "WebServer", "WebServerWS", "rotate_session"]

if TYPE_CHECKING:
    from .sessions.cookie import rotate_session
    from .web.runner import AppServer, Runner, WebServer, WebServerWS


def __getattr__(name: str) -> Any:
    # Imported lazily so that app processes, which import `htagweb` through the app's
    # own module, never load Starlette and uvicorn (see htagweb.app.inert).
    if name in __all__:
        from .app import inert

        if inert.active:
            return inert.InertServer
        if name == "rotate_session":
            from .sessions.cookie import rotate_session

            return rotate_session
        from .web import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'htagweb' has no attribute {name!r}")
