"""What a page may ask of its app, checked in the app process.

A page can only call what htag put in it: its event callers, the next step of a
generator it started, methods decorated with htag's @expose, and methods the app
bound with `tag.bind.<name>` (or calls back with `tag.call.<name>`), whatever their
name when the app's own classes define them (htag's 7GUIs CRUD binds an `update`).
Anything else a client sends (dunders, private names, htag's own inherited Tag API)
is refused.

A URL's query parameters only ever become arguments of the app's `init`: never
attributes of the tag, page script (`js`) or content of the page.

"""

from __future__ import annotations

import weakref
from typing import Any

from htag import Tag

from ..htag_internals import exposed_by_htag, on_every_binding

EVENT_CALLERS = frozenset({"__on__", "__on_event__"})
TAG_API = frozenset(dir(Tag)) | {"init", "exit"}  # htag's own methods, never a page's

_bound: weakref.WeakKeyDictionary[Tag, set[str]] = weakref.WeakKeyDictionary()
_FROM_URL: dict[type, type] = {}  # app class -> its stand-in (see created_from_url)


def record_bindings() -> None:
    """Note every method an app binds through htag's Binder (idempotent)."""
    on_every_binding(lambda tag, method: _bound.setdefault(tag, set()).add(method))


def refusal(generators: dict[int, Any], target_id: Any, method: Any) -> str | None:
    """Why a page could not have sent this call, or None when it could."""
    if method is None:  # the next step of a generator the page started
        return None if target_id in generators else "no such generator"
    if method in EVENT_CALLERS:
        return None  # htag checks the callback name against the tag's own callbacks
    target = Tag.find_tag(target_id) if isinstance(target_id, int) else None
    if target is None:
        return None  # htag answers "not an existing Tag" itself
    if _is_exposed(type(target), method):
        return None
    if method.startswith("_") or (method in TAG_API and not _app_defines(type(target), method)):
        return f"{method!r} is not callable from a page"
    if method in _bound.get(target, ()):
        return None
    return f"{method!r} was never bound on this tag"


def _app_defines(cls: type, name: str) -> bool:
    """Whether the class that gives `cls` its `name` is the app's own, not one of htag's
    (htag's tag classes, Tag.div and the like, live in its own modules)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass.__module__.split(".")[0] != "htag"
    return False


def created_from_url(tag_class: type) -> type:
    """A stand-in for `tag_class` that htag's HRenderer can construct from URL arguments.

    htag's Tag constructor passes its keyword arguments to `init`, then sets each of
    them as an attribute of the tag (`?is_admin=1` would overwrite what init set, and
    `?js=...` would become page script); a class without `init` shows its positional
    arguments as page content. Through this stand-in, the arguments reach `init` and
    nothing else, and a class without `init` gets none. What it builds is a plain
    instance of `tag_class`.
    """
    stand_in = _FROM_URL.get(tag_class)
    if stand_in is None:
        stand_in = _FROM_URL[tag_class] = _stand_in(tag_class)
    return stand_in


def _stand_in(tag_class: type) -> type:
    own_init = _class_attribute(tag_class, "init")

    class FromUrl(tag_class):
        def __new__(cls, *args: Any, _hr_: Any = None, **kwargs: Any) -> Any:
            tag: Any = object.__new__(tag_class)  # not a FromUrl: Python will not init it again
            if own_init is None:
                tag.__init__(_hr_=_hr_)
                return tag

            bound = own_init.__get__(tag, tag_class)

            def init(*positional: Any) -> Any:
                return bound(*positional, **kwargs)

            tag.init = init  # what htag's constructor calls, for this construction only
            try:
                tag.__init__(*args, _hr_=_hr_)
            finally:
                del tag.init
            return tag

    FromUrl.__name__ = FromUrl.__qualname__ = tag_class.__name__
    return FromUrl


def _class_attribute(cls: type, name: str) -> Any:
    """`name` as the class defines or inherits it, None if it does not.

    Read from the classes' own dictionaries: htag's metaclass answers any attribute
    asked of a Tag class with a brand new Tag class, which getattr() would return.
    """
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _is_exposed(cls: type, name: str) -> bool:
    """Whether `name` is a method decorated with htag's @expose."""
    method = _class_attribute(cls, name)
    return exposed_by_htag(method)
