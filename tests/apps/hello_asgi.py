from htag import Tag


class App(Tag.div):
    def init(self):
        self += "hello world"


from htagweb import WebServer

app = WebServer(App)
