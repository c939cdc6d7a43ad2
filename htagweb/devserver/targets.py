"""Finding the app to serve from what the developer typed, inside one folder only.

Every failure is a DevError whose text fits on one line: the command line prints it
instead of a traceback.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from pathlib import Path

from .. import appref
from ..appref import AppRef


class DevError(Exception):
    """A target that cannot be served; its text is the one line shown to the developer."""


class OutsideFolder(DevError):
    """A path leading out of the served folder, or into a hidden part of it."""


def safe_path(root: Path, relative: str) -> Path:
    """`relative` inside `root`; OutsideFolder for absolute paths, `..`, symlinks leading
    out, and hidden entries (.venv, .git: code nobody meant to serve)."""
    refused = OutsideFolder(f"{relative!r}: only paths inside {root} are served")
    if not relative or relative.startswith(("/", "\\")) or os.path.isabs(relative):
        raise refused
    base = root.resolve()
    try:
        candidate = (base / relative).resolve()  # follows symlinks: where it really leads
    except (ValueError, OSError):  # a NUL byte, a symlink loop
        raise refused from None
    if candidate != base and base not in candidate.parents:
        raise refused
    if any(part.startswith((".", "__")) for part in candidate.relative_to(base).parts):
        raise refused
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


def load_app(
    root: Path, relative: str, name: str, debug: bool = False, only_listed: bool = False
) -> AppRef:
    """Import the file and check that `name` in it is an htag Tag class.

    With `only_listed`, the file must declare `name` as a Tag class (read, not run)
    before it is imported: a URL cannot make the server run any other file's code.
    """
    path = safe_path(root, relative)
    if not path.is_file():
        raise DevError(f"no file {relative} in {root}")
    if only_listed and name not in tag_classes_in(path):
        raise DevError(f"{relative} declares no htag app {name!r}")
    if path.suffix != ".py":  # Python has no loader for it (a notes.txt declaring a class)
        raise DevError(f"{relative} cannot be imported")
    module_name = module_name_of(root, path)
    try:
        module = appref.load_module(module_name, str(path))
    except SyntaxError as exc:
        raise DevError(f"{relative}, line {exc.lineno}: {exc.msg}") from (exc if debug else None)
    except Exception as exc:
        failure = f"{type(exc).__name__}: {exc}"
        raise DevError(f"{relative} failed on import: {failure}") from (exc if debug else None)
    try:
        appref.find_class(module, module_name, name)
    except appref.MissingName:
        raise DevError(f"{relative} has no {name!r}") from None
    except appref.NotATagClass:
        raise DevError(f"{relative}: {name} is not an htag Tag class") from None
    return AppRef.of(module_name, name, str(path))


def module_name_of(root: Path, path: Path) -> str:
    """A module name for a file of the folder, unlike any other module's.

    Made of its relative path (readable in URLs and logs) and a hash of it: a file named
    json.py must not replace the json module, nor a/b.py and a_b.py share one name.
    """
    relative = path.relative_to(root.resolve())
    readable = re.sub(r"\W", "_", "_".join(relative.with_suffix("").parts))
    digest = hashlib.sha256(str(relative).encode()).hexdigest()[:8]
    return f"htagdev_{readable}_{digest}"


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
