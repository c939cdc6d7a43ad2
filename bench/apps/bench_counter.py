"""The benchmarked htag app: a counter with a "+" button, and ones that also save it."""

from __future__ import annotations

import os
from typing import Any

from htag import Tag


class App(Tag.div):
    def init(self, *args: Any, **kwargs: Any) -> None:
        self.count = 0
        self.shown = Tag.span(self.count, _class="count")
        self += self.shown
        self += Tag.button("+", _class="inc", _onclick=self.inc)
        self += Tag.button("+", _class="save", _onclick=self.save)
        self += Tag.button("+", _class="inplace", _onclick=self.save_in_place)
        self += Tag.span(os.getpid(), _class="pid")  # lets the bench find this user's process
        # The count last saved, read only when asked: the bench's other figures (memory
        # per idle user above all) measure an app that never opens the session store.
        if "saved" in args:
            saved = max(self.state.get("n", 0), self.state.get("counts", [0])[0])
        else:
            saved = 0
        self += Tag.span(saved, _class="saved")

    def inc(self, o: Any) -> None:
        self.count += 1
        self.shown.clear(self.count)

    def save(self, o: Any) -> None:
        """Like "+", and writes the new count into the session (a store write per click)."""
        self.state["n"] = self.count + 1
        self.inc(o)

    def save_in_place(self, o: Any) -> None:
        """Like "+", and changes a list kept in the session in place (saved as the click ends)."""
        if "counts" not in self.state:
            self.state["counts"] = [0]
        self.state["counts"][0] = self.count + 1
        self.inc(o)
