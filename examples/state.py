"""tag.state: what the app keeps for this user, across page loads and server restarts.

tag.state is this app's own part of the user's session (tag.session is the whole
session, shared by every app and by request.session in Starlette routes). Reload the
page, or restart the server: the list is still there.

python examples/state.py      then open http://localhost:8000
"""

import html

from htag import Tag

from htagweb import Runner


class App(Tag.div):
    def init(self):
        self.entry = Tag.input(_class="entry", _placeholder="something to remember")
        self += self.entry
        value = b"this.previousSibling.value"  # JavaScript, run in the page on click
        self += Tag.button("add", _class="add", _onclick=self.bind.remember(value))
        self += Tag.button("forget all", _class="clear", _onclick=self.forget)
        self.items = Tag.ul(_class="items")
        self += self.items
        self.show()

    def remember(self, text):
        if text:
            self.state["items"] = [*self.state.get("items", []), text]
        self.show()

    def forget(self, event):
        self.state["items"] = []
        self.show()

    def show(self):
        self.items.clear()
        for item in self.state.get("items", []):
            self.items += Tag.li(html.escape(item))  # htag puts text in the page as is


if __name__ == "__main__":
    Runner(App).run()
