"""Code that runs in a web worker (uvicorn or gunicorn): the Starlette app, its endpoints,
and its door to the supervisor and to users' app processes."""
