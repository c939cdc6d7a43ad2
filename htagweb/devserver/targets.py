"""Finding the app to serve from what the developer typed, inside one folder only.

Every failure is a DevError whose text fits on one line: the command line prints it
instead of a traceback.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path

from htag import Tag

from ..appref import AppRef


class DevError(Exception):
    """A target that cannot be served; its text is the one line shown to the developer."""


def safe_path(root: Path, relative: str) -> Path:
    """`relative` inside `root`; DevError for absolute paths, `..` and symlinks leading out."""
    if not relative or relative.startswith(("/", "\\")) or os.path.isabs(relative):
        raise DevError(f"{relative!r}: only paths inside {root} are served")
    base = root.resolve()
    candidate = (base / relative).resolve()  # follows symlinks: where it really leads
    if candidate != base and base not in candidate.parents:
        raise DevError(f"{relative!r}: only paths inside {root} are served")
    return candidate


def split_target(target: str, root: Path) -> tuple[str, str]:
    """("main.py", "App") from "main:App", "main.py", "main" or "main.App"."""
    if ":" in target:
        module, name = target.split(":", 1)
    elif target.endswith(".py"):
        module, name = target, "App"
    elif "." in target and (root / (target.rpartition(".")[0].replace(".", "/") + ".py")).exists():
        module, name = target.rpartition(".")[0], target.rpartition(".")[2]
    else:
        module, name = target, "App"
    path = module if module.endswith(".py") else module.replace(".", "/") + ".py"
    if not name.isidentifier():
        raise DevError(f"{name!r} is not a Python name")
    return path, name


def load_app(root: Path, relative: str, name: str, debug: bool = False) -> AppRef:
    """Import the file and check that `name` in it is an htag Tag class."""
    path = safe_path(root, relative)
    if not path.is_file():
        raise DevError(f"no file {relative} in {root}")
    module_name = module_name_of(root, path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DevError(f"{relative} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise DevError(f"{relative}, line {exc.lineno}: {exc.msg}") from (exc if debug else None)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise DevError(
            f"{relative} failed on import: {type(exc).__name__}: {exc}"
        ) from (exc if debug else None)
    target = getattr(module, name, None)
    if target is None:
        raise DevError(f"{relative} has no {name!r}")
    if not (inspect.isclass(target) and issubclass(target, Tag)):
        raise DevError(f"{relative}: {name} is not an htag Tag class")
    return AppRef(
        fqn=f"{module_name}.{name}",
        module=module_name,
        qualname=name,
        file=str(path),
        version=path.stat().st_mtime_ns,
    )


def module_name_of(root: Path, path: Path) -> str:
    """A module name for a file of the folder: its relative path, made an identifier."""
    relative = path.relative_to(root.resolve()).with_suffix("")
    name = re.sub(r"\W", "_", "_".join(relative.parts))
    return name if name[:1].isalpha() else f"app_{name}"


def tag_classes_in(path: Path) -> list[str]:
    """The top-level classes of a .py file that derive from htag's Tag (read, not run)."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(_names_tag(base) for base in node.bases):
            found.append(node.name)
    return found


def _names_tag(base: ast.expr) -> bool:
    while isinstance(base, ast.Attribute):  # Tag.div, htag.Tag.div
        if isinstance(base.value, ast.Name) and base.value.id == "Tag":
            return True
        base = base.value
    return isinstance(base, ast.Name) and base.id == "Tag"
