"""The benchmarked htag app: a counter with a "+" button."""

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
        self += Tag.span(os.getpid(), _class="pid")  # lets the bench find this user's process

    def inc(self, o: Any) -> None:
        self.count += 1
        self.shown.clear(self.count)
