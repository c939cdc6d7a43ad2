"""A server-side timer: the page shows a count that the app pushes with tag.update()."""

import asyncio

from htag import Tag


class App(Tag.div):
    def init(self):
        self.ticks = 0
        self.shown = Tag.span(self.ticks, _class="ticks")
        self += self.shown
        asyncio.ensure_future(self._tick())

    async def _tick(self):
        while self.ticks < 1000:
            await asyncio.sleep(0.1)
            self.ticks += 1
            self.shown.clear(self.ticks)
            await self.update()
