"""Apps that take what a URL gives them, for the attacks through query parameters."""

import json

from htag import Tag


class App(Tag.div):
    """Sets is_admin from the session, as a real app would; takes any keyword."""

    def init(self, **kwargs):
        self.is_admin = self.session.get("admin") is True
        self.shown = Tag.span(str(self.is_admin), _class="admin")
        self += self.shown
        self += Tag.span(json.dumps(kwargs), _class="kwargs")
        self += Tag.button("check", _class="check", _onclick=self.check)

    def check(self, event):
        self.shown.clear(f"checked {self.is_admin}")  # what the instance holds now


class Bare(Tag.div):
    """No init: htag would show positional arguments as the page's content."""


class Strict(Tag.div):
    """Its init fails on what a URL gives it, quoting it in the error."""

    def init(self, n="0"):
        self += Tag.span(int(n), _class="number")
