"""The test app: a counter, plus buttons that misbehave on purpose."""

import asyncio
import json
import os
import signal

from htag import Tag

INITS = 0  # how many instances this process created


class App(Tag.div):
    def init(self, *args, **kwargs):
        global INITS
        INITS += 1
        while "hang" in args:  # a runaway init, for the deadline test
            pass
        if "explode" in args:
            raise ValueError("secret detail in /srv/private/app.py")
        self.count = 0
        self.shown = Tag.span(self.count, _class="count")
        self += self.shown
        self += Tag.button("+", _class="inc", _onclick=self.inc)
        self += Tag.span(os.getpid(), _class="pid")
        self += Tag.span(json.dumps([list(args), kwargs]), _class="init")
        self += Tag.button("loop", _class="loop", _onclick=self.loop)
        self += Tag.button("deaf", _class="deaf", _onclick=self.deaf_loop)
        self += Tag.button("exit", _class="exit", _onclick=self.leave)
        self += Tag.button("boom", _class="boom", _onclick=self.boom)
        self += Tag.button("ticks", _class="ticks", _onclick=self.start_ticks)
        self += Tag.button("stream", _class="stream", _onclick=self.stream)
        self += Tag.button("inits", _class="inits", _onclick=self.show_inits)
        self += Tag.button("slow", _class="slow", _onclick=self.slow)
        self += Tag.button("later", _class="later", _onclick=self.add_later)
        self.extra = Tag.span(0, _class="extra")  # what add_later pushed
        self += self.extra

    def inc(self, o):
        self.count += 1
        self.shown.clear(self.count)

    def show_inits(self, o):
        self.shown.clear(INITS)

    def loop(self, o):
        while True:
            pass

    def deaf_loop(self, o):
        signal.signal(signal.SIGALRM, signal.SIG_IGN)  # defeats the app-side deadline
        while True:
            pass

    def leave(self, o):
        self.exit()

    def boom(self, o):
        raise ValueError("secret detail in /srv/private/app.py")

    async def start_ticks(self, o):
        asyncio.ensure_future(self._ticks())

    async def _ticks(self):
        for _ in range(3):
            await asyncio.sleep(0.05)
            self.count += 100
            self.shown.clear(self.count)
            await self.shown.update()

    async def slow(self, o):
        print("slow click started", flush=True)  # the browser tests wait for this line
        await asyncio.sleep(float(os.environ.get("COUNTER_SLOW_SECONDS", "1")))
        self.count += 1
        self.shown.clear(self.count)

    async def add_later(self, o):
        asyncio.ensure_future(self._add_later())

    async def _add_later(self):
        await asyncio.sleep(float(os.environ.get("COUNTER_LATER_SECONDS", "0.5")))
        self.extra.clear(100)
        pushed = await self.extra.update()
        print(f"later: pushed={pushed}", flush=True)

    def stream(self, o):
        for i in range(3):
            yield Tag.span(f"s{i}", _class="streamed")
