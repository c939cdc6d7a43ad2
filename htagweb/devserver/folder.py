"""The app served at "/" when the folder has no index.py: it browses the folder.

Sub-folders open in the same app (?dir=...); each htag app found in a .py file (a
top-level class deriving from Tag) gets a link that serves it (/_dev/open). Nothing
outside the folder is listed or opened: see targets.safe_path.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from htag import Tag

from .targets import DevError, safe_path, tag_classes_in

ROOT_VARIABLE = "HTAGWEB_DEV_ROOT"  # set by the command line; read in app processes too
OPEN_PATH = "/_dev/open"


def served_root() -> Path:
    """The folder being served (the command line's working directory)."""
    return Path(os.environ.get(ROOT_VARIABLE) or os.getcwd())


class FolderBrowser(Tag.div):
    statics = "body { font-family: system-ui, sans-serif; margin: 2em; } li { margin: .3em 0; }"

    def init(self, dir: str = "", **_: Any) -> None:
        root = served_root()
        try:
            folder = safe_path(root, dir) if dir else root.resolve()
        except DevError as exc:
            self += Tag.p(html.escape(str(exc)), _class="refused")
            return
        if not folder.is_dir():
            self += Tag.p(f"{html.escape(dir)} is not a folder", _class="refused")
            return
        shown = dir or "."
        self += Tag.h1(f"htagweb: {html.escape(shown)}")
        entries = Tag.ul(_class="entries")
        if dir:
            parent = str(Path(dir).parent)
            entries += Tag.li(Tag.a("..", _href="/?" + urlencode({"dir": parent})))
        for entry in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name)):
            relative = f"{dir}/{entry.name}" if dir else entry.name
            try:
                safe_path(root, relative)  # not hidden, no symlink leading out
            except DevError:
                continue
            if entry.is_dir():
                href = "/?" + urlencode({"dir": relative})
                entries += Tag.li(Tag.a(f"{html.escape(entry.name)}/", _href=href), _class="folder")
            elif entry.suffix == ".py":
                entries += self._file(entry, relative)
        self += entries

    def _file(self, path: Path, relative: str) -> Tag:
        item = Tag.li(html.escape(path.name), _class="file")
        for name in tag_classes_in(path):
            query = urlencode({"path": relative, "name": name})
            item += Tag.a(f" ▶ {name}", _href=f"{OPEN_PATH}?{query}", _class="app")
        return item
