"""AppRef: how to find an htag app class again in another process.

Web workers resolve what the developer passed (a Tag class, "module.Class",
"module:Class" or a module holding `App`) into an AppRef; templates and spawned
app processes load the class from it. The development server loads the files of its
folder with the same load_module and find_class. A client never names a module: its
fqn only selects among AppRefs this server registered.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from htag import Tag

from .wire.messages import AppRefJson

FQN_PATTERN = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


class AppRefError(ValueError):
    """What the developer passed cannot be served as an htag app."""


class MissingName(AppRefError):
    """The module has nothing under the name asked for."""


class NotATagClass(AppRefError):
    """The name is there, but not an htag Tag class."""


@dataclass(frozen=True)
class AppRef:
    fqn: str  # "module.Qualname": the public name, used in interaction URLs
    module: str  # import name of the module
    qualname: str
    file: str | None  # set when the module must be loaded from this file (a __main__ script)
    version: int  # mtime of the module's file: a changed file means a new template

    @classmethod
    def of(
        cls, module: str, qualname: str, file: str | None = None, *, source: str | None = None
    ) -> AppRef:
        """The ref of `module`'s `qualname`, loaded from `file` when set; its version is
        the mtime of the module's file, `source` when it is not loaded from one."""
        version = _file_version(file or source)
        return cls(f"{module}.{qualname}", module, qualname, file, version)

    def to_json(self) -> AppRefJson:
        return {
            "fqn": self.fqn,
            "module": self.module,
            "qualname": self.qualname,
            "file": self.file,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: AppRefJson) -> AppRef:
        return cls(data["fqn"], data["module"], data["qualname"], data["file"], data["version"])


def _file_version(path: str | None) -> int:
    try:
        return os.stat(path).st_mtime_ns if path else 0
    except OSError:
        return 0


def _import_string(text: str) -> type:
    module_name, sep, qualname = text.partition(":")
    if not sep:
        module_name, _, qualname = text.rpartition(".")
    if not module_name or not qualname:
        raise AppRefError(f"'{text}' is not 'module.Class' or 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppRefError(f"cannot import module '{module_name}' for '{text}': {exc}") from exc
    return _attribute(module, module_name, qualname)


def _attribute(module: ModuleType, module_name: str, qualname: str) -> Any:
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise MissingName(f"module '{module_name}' has no '{qualname}'")
    return target


def resolve(obj: Any) -> tuple[AppRef, type[Tag]]:
    """Turn what the developer passed into an AppRef (and the class, for checks)."""
    if isinstance(obj, str):
        obj = _import_string(obj)
    if isinstance(obj, ModuleType):
        if not hasattr(obj, "App"):
            raise AppRefError(f"module '{obj.__name__}' has no 'App' to serve")
        obj = obj.App
    if not (inspect.isclass(obj) and issubclass(obj, Tag)):
        raise AppRefError(f"{obj!r} is not an htag Tag class")
    qualname = obj.__qualname__
    if "<locals>" in qualname:
        raise AppRefError(f"{qualname} is defined inside a function; define it at module level")

    module = sys.modules.get(obj.__module__)
    file = getattr(module, "__file__", None)
    if obj.__module__ == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":  # python -m package.mod
            module_name, load_from = spec.name, None
        elif file:
            module_name = os.path.splitext(os.path.basename(file))[0]
            load_from = os.path.abspath(file)
        else:
            raise AppRefError(f"{qualname} lives in an interactive session; put it in a file")
    else:
        module_name, load_from = obj.__module__, None
    return AppRef.of(module_name, qualname, load_from, source=file), obj


def load(ref: AppRef) -> type[Tag]:
    """Import the app's module in this process and return its class."""
    return find_class(load_module(ref.module, ref.file), ref.module, ref.qualname)


def load_module(name: str, file: str | None = None) -> ModuleType:
    """Import module `name`, from `file` when set (a script, a file the dev server serves).

    The module's own errors propagate as they are; a file that fails leaves no half-run
    module behind in sys.modules, so that importing it again runs it again.
    """
    if not file:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise AppRefError(f"cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def find_class(module: ModuleType, module_name: str, qualname: str) -> type[Tag]:
    """The htag Tag class `qualname` of `module`: MissingName or NotATagClass otherwise."""
    target = _attribute(module, module_name, qualname)
    if not (inspect.isclass(target) and issubclass(target, Tag)):
        raise NotATagClass(f"{module_name}.{qualname} is not an htag Tag class")
    return target
