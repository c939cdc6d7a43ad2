"""Imports fine in the web worker, fails in the app's template (where htagweb is inert)."""

from htag import Tag

import htagweb.app.inert

if htagweb.app.inert.active:
    raise RuntimeError("this module cannot be imported in an app process")


class App(Tag.div):
    def init(self):
        self += "never shown"
