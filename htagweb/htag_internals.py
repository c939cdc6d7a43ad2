"""The parts of htag 1.x's private API that htagweb needs, in one place.

htag does not promise them: when htag changes, this module is where to look. Everything
else in htagweb uses htag's public names only (Tag, HRenderer and their documented use).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from htag import tag as htag_tag
from htag.runners import commons


def url_arguments(url: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The (args, kwargs) htag's runners give `init` for a URL's query string."""
    args, kwargs = commons.url2ak(url)
    return tuple(args), dict(kwargs)


def running_generators(renderer: Any) -> dict[int, Any]:
    """The generators an HRenderer keeps between their steps, by the id a page names."""
    generators: dict[int, Any] = renderer._loop
    return generators


def page_scripts(root: Any) -> list[str]:
    """The scripts of a tag tree, as htag runs them when a page is shown."""
    scripts: list[str] = root._getAllJs()
    return scripts


def on_every_binding(note: Callable[[Any, str], None]) -> None:
    """Have `note(tag, method)` called whenever an app binds one of its methods through
    `tag.bind.<method>` (or `tag.call.<method>`); installed once per process."""
    binder = htag_tag.Binder
    if getattr(binder, "_htagweb_records", False):
        return
    original = binder.__getattr__

    def noting_getattr(self: Any, method: str) -> Any:
        caller = original(self, method)  # raises for unknown methods, as htag does
        note(self._Binder__instance, method)
        return caller

    binder.__getattr__ = noting_getattr
    binder._htagweb_records = True


def exposed_by_htag(method: Any) -> bool:
    """Whether `method` carries the mark of htag's @expose decorator."""
    return bool(getattr(method, "__dict__", {}).get("_autoExposeClientSide_"))
