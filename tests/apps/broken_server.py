from broken_app import App

from htagweb import Runner

app = Runner(App)
