"""Several apps on several routes of one server, next to your own Starlette routes.

python examples/main.py      then open http://localhost:8000
or, with workers:   uvicorn main:app --workers 4   (from the examples folder)
"""

import counter
import query_params
import state
import timer
from htag import Tag
from starlette.responses import JSONResponse

from htagweb import Runner


class Home(Tag.div):
    def init(self):
        self += Tag.h1("htagweb examples")
        links = Tag.ul()
        for path, text in [
            ("/counter", "a counter"),
            ("/timer", "a clock pushed by the server (HTTP interactions)"),
            ("/state", "tag.state kept across reloads"),
            ("/hello?name=Ada&times=2", "query parameters"),
            ("/api/visits", "a plain Starlette route reading request.session"),
        ]:
            links += Tag.li(Tag.a(text, _href=path))
        self += links


app = Runner(Home)  # "/"


async def counter_page(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return await app.handle(request, counter.App)


async def timer_page(request):
    return await app.handle(request, timer.App, http_only=True)  # pushes through SSE


async def state_page(request):
    return await app.handle(request, state.App)


async def hello_page(request):
    return await app.handle(request, query_params.App)


async def visits(request):
    return JSONResponse({"counter page visits": request.session.get("visits", 0)})


app.add_route("/counter", counter_page)
app.add_route("/timer", timer_page)
app.add_route("/state", state_page)
app.add_route("/hello", hello_page)
app.add_route("/api/visits", visits)

if __name__ == "__main__":
    app.run()
