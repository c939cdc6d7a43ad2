"""An app with one bound method, one @expose'd method and one method no page can reach."""

from htag import Tag, expose


class App(Tag.div):
    def init(self):
        self.count = 0
        self.shown = Tag.span(0, _class="count")
        self += self.shown
        self += Tag.button("+", _class="inc", _onclick=self.inc)
        self += Tag.button("+5", _class="bound", _onclick=self.bind.bump(5))

    def inc(self, o):
        self.show(self.count + 1)

    def bump(self, n):
        self.show(self.count + n)

    @expose
    def exposed(self, n):
        self.show(self.count + n)

    def secret(self):
        self.show(999)

    def show(self, count):
        self.count = count
        self.shown.clear(count)
