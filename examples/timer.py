"""A clock the server pushes to the page with tag.update(), once a second.

python examples/timer.py      then open http://localhost:8000
"""

import asyncio
import time

from htag import Tag

from htagweb import Runner


class App(Tag.div):
    def init(self):
        self.clock = Tag.span(time.strftime("%H:%M:%S"), _class="clock")
        self.ticks = 0
        self.counter = Tag.span(self.ticks, _class="ticks")
        self += Tag.p(["Server time: ", self.clock])
        self += Tag.p(["Updates pushed: ", self.counter])
        self.running = True
        self += Tag.button("pause / resume", _class="toggle", _onclick=self.toggle)
        self.ticking = asyncio.ensure_future(self.tick())  # lives as long as the page

    def toggle(self, event):
        self.running = not self.running

    async def tick(self):
        unseen = 0  # seconds without a page to show the clock to
        while unseen < 60:  # the page was closed, or reloaded (a new App ticks for it)
            await asyncio.sleep(1)
            if self.running:
                self.ticks += 1
                self.clock.clear(time.strftime("%H:%M:%S"))
                self.counter.clear(self.ticks)
                # No browser event: the server pushes. False while no page shows this App.
                unseen = 0 if await self.update() else unseen + 1


if __name__ == "__main__":
    Runner(App).run()
