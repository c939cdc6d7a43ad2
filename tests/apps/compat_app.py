"""Apps written as htag desktop apps and htagweb 1.0's users write them, for tests/test_compat.py.

Nothing here knows about htagweb: tag.state changed in place and by assignment, Python
values that are not JSON, an own method named like one of htag's, self.call from init.
"""

import asyncio
import datetime
import decimal
import json
import uuid

from htag import Tag

VALUES = {
    "tuple": (1, "a"),
    "set": {3, 4},
    "when": datetime.datetime(2026, 12, 1, 9, 30),
    "day": datetime.date(2026, 12, 1),
    "price": decimal.Decimal("9.90"),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "raw": b"\x00\xff",
    "nested": {"k": [(1, 2), {5}]},
}


def shown(value):
    """A value as the page shows it: JSON of its repr, so that the test compares types too."""
    return json.dumps(repr(value))


class App(Tag.body):
    def init(self):
        self.redraw()

    def redraw(self):
        self.clear()
        self += Tag.span(json.dumps(self.state.get("list")), _class="list")
        self += Tag.span(self.state.get("count", 0), _class="count")
        self += Tag.span(shown(self.state.get("values")), _class="values")
        self += Tag.button("add list", _class="add", _onclick=self.append_x)
        self += Tag.button("inc", _class="inc", _onclick=self.inc)
        self += Tag.button("keep values", _class="keep", _onclick=self.keep)
        self += Tag.button("bad", _class="bad", _onclick=self.bad)
        self += Tag.button("clear", _class="clear", _onclick=self.forget)
        self += Tag.button("update", _class="update", _onclick=self.bind.update())
        self += Tag.span(self.state.get("updates", 0), _class="updates")

    def append_x(self, o):
        if "list" in self.state:
            self.state["list"].append("x")  # in place, as htagweb 1.0's example.py does
        else:
            self.state["list"] = []
        self.redraw()

    def inc(self, o):
        self.state["count"] = self.state.get("count", 0) + 1  # by assignment
        self.redraw()

    def keep(self, o):
        self.state["values"] = dict(VALUES)
        self.redraw()

    def bad(self, o):
        self.state["list"].append(object())  # not something a session can keep

    def forget(self, o):
        self.state.clear()
        self.redraw()

    def update(self):
        """The app's own method named like htag's Tag.update (htag's 7GUIs CRUD does this)."""
        self.state["updates"] = self.state.get("updates", 0) + 1
        self.redraw()


class CalledBack(Tag.body):
    """Draws itself through a call the page makes once loaded, as 1.0's examples do."""

    def init(self):
        self.call.redraw()
        self.clicks = 0

    def redraw(self):
        self.clear()
        self += Tag.span(self.clicks, _class="clicks")
        self += Tag.button("+", _class="plus", _onclick=self.plus)

    def plus(self, o):
        self.clicks += 1
        self.redraw()


class Ticker(Tag.body):
    """Generators, async generators and a tag.update() loop that changes state in place."""

    def init(self):
        self.shown = Tag.span("", _class="ticks")
        self += self.shown
        self += Tag.button("gen", _class="gen", _onclick=self.generate)
        self += Tag.button("agen", _class="agen", _onclick=self.agenerate)
        self += Tag.button("loop", _class="loop", _onclick=self.start)

    def generate(self, o):
        for letter in "abc":
            self.shown.clear(letter)
            yield

    async def agenerate(self, o):
        for letter in "xyz":
            self.shown.clear(letter)
            await asyncio.sleep(0)
            yield

    async def start(self, o):
        asyncio.ensure_future(self.loop())

    async def loop(self):
        self.state["ticks"] = []
        ticks = self.state["ticks"]
        for n in range(3):
            ticks.append(n)  # in place, from a task: saved when it pushes
            self.shown.clear(json.dumps(ticks))
            await self.shown.update()
