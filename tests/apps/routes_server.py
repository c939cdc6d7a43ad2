"""handle() and add_route(): several apps on several routes of one server."""

from counter import App
from starlette.responses import PlainTextResponse

from htagweb import Runner

app = Runner()  # nothing at "/"


async def counter_page(request):
    return await request.app.handle(request, App, http_only=True)


async def hello_page(request):
    return await request.app.handle(request, "hello_asgi.App")


async def plain(request):
    return PlainTextResponse("plain route")


app.add_route("/counter", counter_page)
app.add_route("/hello", hello_page)
app.add_route("/plain", plain)
