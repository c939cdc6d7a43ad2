"""A counter: each visitor gets their own, in their own process.

python examples/counter.py      then open http://localhost:8000
"""

from htag import Tag

from htagweb import Runner


class App(Tag.div):
    def init(self):
        self.count = 0
        self.shown = Tag.span(self.count)
        self += Tag.button("-", _onclick=self.decrement)
        self += self.shown
        self += Tag.button("+", _onclick=self.increment)

    def increment(self, event):
        self.count += 1
        self.shown.clear(self.count)

    def decrement(self, event):
        self.count -= 1
        self.shown.clear(self.count)


if __name__ == "__main__":
    Runner(App).run()
