"""Shows and changes tag.state and tag.session, for the session tests."""

import json
import os

from htag import Tag


class App(Tag.div):
    def init(self):
        self.shown = Tag.span(self.snapshot(), _class="state")
        self += self.shown
        self += Tag.span(os.getpid(), _class="pid")
        self += Tag.button("+", _class="inc", _onclick=self.inc)
        self += Tag.button("show", _class="show", _onclick=self.show)
        self += Tag.button("bad", _class="bad", _onclick=self.store_object)
        self += Tag.button("big", _class="big", _onclick=self.store_big)

    def snapshot(self):
        return json.dumps({"clicks": self.state.get("clicks", 0), "user": self.session.get("user")})

    def inc(self, o):
        self.state["clicks"] = self.state.get("clicks", 0) + 1
        self.show(o)

    def show(self, o):
        self.shown.clear(self.snapshot())

    def store_object(self, o):
        self.state["thing"] = object()

    def store_big(self, o):
        self.session["big"] = "x" * 5000
