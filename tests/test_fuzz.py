"""Hypothesis throws generated input at the interaction endpoints of a real server."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ServerProcess, User

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
METHODS = st.sampled_from(["__on__", "__on_event__", "inc", "__setattr__", "exit", ""]) | st.text()
PAYLOADS = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers() | st.text() | JSON,
        "method": METHODS | JSON,
        "args": st.lists(JSON, max_size=4) | JSON,
        "kargs": st.dictionaries(st.text(), JSON, max_size=3) | JSON,
        "event": JSON,
    },
)


def _nested_body(depth: int, kind: str) -> bytes:
    """An interaction whose argument nests `depth` lists (or objects) deep."""
    opening, leaf, closing = ("[", "", "]") if kind == "list" else ('{"k":', "0", "}")
    inner = opening * depth + leaf + closing * depth
    return f'{{"id": 1, "method": "__on__", "args": [{inner}]}}'.encode()


# Lists inside one another around the nesting limit (64) and up to where JSON gives up.
NESTED = st.builds(
    _nested_body, st.integers(min_value=1, max_value=3000), st.sampled_from(["list", "object"])
)
BODIES = PAYLOADS.map(lambda p: json.dumps(p).encode()) | st.binary(max_size=300) | NESTED
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzzed_server():
    server = ServerProcess(
        [sys.executable, "-m", "uvicorn", "guarded_server:app", "--port", "{port}"]
    )
    server.start()
    yield server
    server.stop()
    leftovers = server.leftovers()
    server.cleanup()
    assert leftovers == ([], [])


@pytest.fixture(scope="module")
def fuzzing_user(fuzzed_server):
    user = User(fuzzed_server.url)
    page = user.get()
    yield user, page
    user.close()


@FUZZ
@given(body=BODIES)
def test_http_interactions_never_get_a_server_error(fuzzing_user, fuzzed_server, body):
    user, page = fuzzing_user
    response = user.http.post(f"{page.endpoint}?i={page.instance}", content=body)
    assert response.status_code < 500, (body, response.text)
    assert "Traceback" not in response.text


@FUZZ
@given(frames=st.lists(BODIES.map(lambda b: b.decode("utf-8", "replace")), max_size=4))
def test_websocket_interactions_never_break_the_connection(fuzzing_user, frames):
    user, page = fuzzing_user
    with user.websocket(page) as ws:
        for frame in frames:
            ws.send(frame)
        ws.send(json.dumps(page.click("inc")))  # and the app still answers after them
        answers = [json.loads(ws.recv(timeout=20)) for _ in range(len(frames) + 1)]
    assert all(isinstance(answer, dict) for answer in answers)
    assert "update" in answers[-1] or "err" not in answers[-1]


def test_the_app_survived_the_fuzzing(fuzzing_user, fuzzed_server):
    user, page = fuzzing_user
    answer = user.post(page, page.click("inc"))
    assert answer.status_code == 200 and "update" in answer.json()
    # The log holds htag's own reports of refused or failed calls, but no worker failure.
    assert "Exception in ASGI application" not in fuzzed_server.log
