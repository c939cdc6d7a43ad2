"""Runner.run(workers=3): htagweb's own pre-fork workers."""

from counter import App

from htagweb import WebServer

WebServer(App).run(workers=3)
