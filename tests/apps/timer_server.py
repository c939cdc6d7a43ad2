"""Serves the timer app over WebSocket at "/" and over HTTP only at "/http"."""

from timer_app import App

from htagweb import Runner

app = Runner(App)


async def http_page(request):
    return await app.handle(request, App, http_only=True)


app.add_route("/http", http_page)
