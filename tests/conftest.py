from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support import ServerProcess

START_METHODS = ["fork", "spawn"]


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(start_method: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start real servers (fork or spawn path); each is stopped and checked for leaks."""
    servers: list[ServerProcess] = []

    def start(command: list[str], env: dict[str, str] | None = None, **kwargs) -> ServerProcess:
        server = ServerProcess(
            command, env={"HTAGWEB_START_METHOD": start_method, **(env or {})}, **kwargs
        )
        servers.append(server)
        return server.start()

    yield start
    leftovers = {}
    for server in servers:
        server.stop()
        leftovers[server.port] = server.leftovers()
        server.cleanup()
    # Every test also checks that stopping its servers left no process, socket or file.
    assert all(found == ([], []) for found in leftovers.values()), leftovers
