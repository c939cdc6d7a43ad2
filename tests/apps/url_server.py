"""Serves url_app's apps over HTTP: App at "/", Bare at "/bare", Strict at "/strict"."""

import os

from url_app import App, Bare, Strict

from htagweb import Runner

app = Runner(App, http_only=True, debug=os.environ.get("URL_DEBUG") == "1")


async def bare(request):
    return await request.app.handle(request, Bare)


async def strict(request):
    return await request.app.handle(request, Strict)


app.add_route("/bare", bare)
app.add_route("/strict", strict)
