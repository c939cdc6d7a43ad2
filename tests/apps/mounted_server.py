"""A Runner mounted under /app in a plain Starlette app."""

from counter import App
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from htagweb import Runner

htag_app = Runner(App)


async def home(request):
    return PlainTextResponse("the outer app")


app = Starlette(routes=[Route("/", home), Mount("/app", app=htag_app)])
