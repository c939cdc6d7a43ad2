"""Serves url_app's apps over HTTP: App at "/", Bare at "/bare"."""

from url_app import App, Bare

from htagweb import Runner

app = Runner(App, http_only=True)


async def bare(request):
    return await request.app.handle(request, Bare)


app.add_route("/bare", bare)
