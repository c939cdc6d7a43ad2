from htag import Tag


class App(Tag.div):
    def init(self):
        self += "hello world"


from htagweb import AppServer

AppServer(App).run()
