"""Query parameters reach the app's init: /?name=Ada&times=3 calls init(name="Ada", times="3").

Positional ones too: /?a&b calls init("a", "b"). Values are strings, as typed.

python examples/query_params.py      then open http://localhost:8000/?name=Ada&times=3
"""

import html

from htag import Tag

from htagweb import Runner


class App(Tag.div):
    def init(self, *args, name="world", times="1"):
        try:
            count = max(1, min(int(times), 10))
        except ValueError:
            count = 1
        for _ in range(count):
            self += Tag.p(f"Hello {html.escape(name)}!", _class="greeting")  # htag does not escape
        if args:
            self += Tag.p("Flags: " + ", ".join(html.escape(a) for a in args), _class="flags")
        self += Tag.a("Try ?name=Ada&times=3", _href="?name=Ada&times=3")


if __name__ == "__main__":
    Runner(App).run()
