"""One isolated process per (user, app), owned by the supervisor, reachable from any worker."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from support import Page, User, text_of_class, wait_for_exit

COUNTER = [sys.executable, "counter_server.py"]
GUNICORN_COUNTER = [
    sys.executable, "-m", "gunicorn", "-w", "4", "-k", "uvicorn.workers.UvicornH11Worker",
    "-b", "127.0.0.1:{port}", "--preload", "counter_server:app",
]  # fmt: skip


def count_in(answer: httpx.Response) -> int:
    assert answer.status_code == 200, (answer.status_code, answer.text)
    return count_in_actions(answer.json())


def count_in_actions(actions: dict) -> int:
    (update,) = actions["update"].values()
    return int(text_of_class(update, "count"))


def test_clicks_over_gunicorn_workers_reach_one_instance_and_survive_a_killed_worker(serve):
    server = serve(
        GUNICORN_COUNTER, env={"COUNTER_HTTP_ONLY": "1"}, ready_lines=4, stop_signal=signal.SIGTERM
    )
    user = User(server.url)
    page = user.get("/")
    app_pid = int(page.text_of("pid"))
    workers_seen: set[int] = set()
    for click in range(1, 51):
        if click == 25:  # SIGKILL one worker midway: gunicorn replaces it, the app lives on
            victim = int(httpx.get(server.url + "/worker").text)
            os.kill(victim, signal.SIGKILL)
            assert wait_for_exit(victim, 10)
        answer = user.post(page, page.click("inc"), fresh_connection=True)
        assert count_in(answer) == click
        workers_seen.add(int(httpx.get(server.url + "/worker").text))
    assert len(workers_seen) >= 2
    assert os.path.exists(f"/proc/{app_pid}")  # the same process held all 50 clicks
    server.stop()
    assert server.leftovers() == ([], [])


def test_two_users_never_see_each_others_state(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    alice, bob = User(server.url), User(server.url)
    alice_page, bob_page = alice.get(), bob.get()
    assert alice_page.text_of("pid") != bob_page.text_of("pid")
    for _ in range(3):
        alice_answer = alice.post(alice_page, alice_page.click("inc"))
    bob_answer = bob.post(bob_page, bob_page.click("inc"))
    assert count_in(alice_answer) == 3 and count_in(bob_answer) == 1
    # Bob replaying Alice's interaction (ids and all) only reaches Bob's own process.
    stolen = bob.post(alice_page, alice_page.click("inc")).json()
    assert stolen["instance"] == bob_page.instance
    assert text_of_class(stolen["update"]["0"], "count") == "1"
    assert count_in(alice.post(alice_page, alice_page.click("inc"))) == 4


def test_runaway_handler_is_ended_while_other_users_are_served(serve):
    # The other user clicks back to back for the whole loop: no rate limit here.
    env = {"COUNTER_HTTP_ONLY": "1", "COUNTER_TIMEOUT_INTERACTION": "1.5", "COUNTER_RATE": "0"}
    server = serve(COUNTER, env=env)
    stuck, other = User(server.url), User(server.url)
    stuck_page, other_page = stuck.get(), other.get()
    stuck_pid = int(stuck_page.text_of("pid"))
    result: dict[str, httpx.Response] = {}
    looping = threading.Thread(
        target=lambda: result.setdefault("answer", stuck.post(stuck_page, stuck_page.click("loop")))
    )
    looping.start()
    clicks_during_loop = 0
    while looping.is_alive():
        clicks_during_loop += 1
        assert count_in(other.post(other_page, other_page.click("inc"))) == clicks_during_loop
    looping.join()
    assert clicks_during_loop >= 3
    answer = result["answer"]
    assert answer.status_code == 504 and "1.5s" in answer.json()["err"]
    assert wait_for_exit(stuck_pid, 10)
    fresh = stuck.get()  # the next page load starts fresh
    assert int(fresh.text_of("pid")) != stuck_pid and fresh.text_of("count") == "0"


def test_runaway_handler_over_websocket_gets_a_clear_error(serve):
    server = serve(COUNTER, env={"COUNTER_TIMEOUT_INTERACTION": "1"})
    user = User(server.url)
    page = user.get()
    with user.websocket(page) as ws:
        ws.send(json.dumps(page.click("loop")))
        message = json.loads(ws.recv(timeout=20))
        assert "1s" in message["err"]
    assert wait_for_exit(int(page.text_of("pid")), 10)


def test_killed_app_process_is_replaced_on_next_page_load(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    user = User(server.url)
    page = user.get()
    pid = int(page.text_of("pid"))
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid, 10)
    assert user.post(page, page.click("inc")).json() == {"reload": True}
    fresh = user.get()
    assert int(fresh.text_of("pid")) != pid
    assert count_in(user.post(fresh, fresh.click("inc"))) == 1


def test_page_reload_gives_a_fresh_instance_with_query_parameters(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    user = User(server.url)
    page = user.get()
    user.post(page, page.click("inc"))
    reloaded = user.get("/?a&b=1")
    assert reloaded.text_of("count") == "0"
    assert reloaded.text_of("pid") == page.text_of("pid")  # same process, new instance
    assert json.loads(reloaded.text_of("init")) == [["a"], {"b": "1"}]


def test_older_tab_is_shown_the_live_instance(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    user = User(server.url)
    old_tab = user.get()
    new_tab = user.get()
    assert count_in(user.post(new_tab, new_tab.click("inc"))) == 1
    answer = user.post(old_tab, old_tab.click("inc")).json()
    assert answer["instance"] == new_tab.instance
    live_body = answer["update"]["0"]
    assert text_of_class(live_body, "count") == "1"  # the live page, not a click on a dead one
    assert count_in(user.post(new_tab, new_tab.click("inc"))) == 2


def test_tag_exit_ends_the_process(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    user = User(server.url)
    page = user.get()
    pid = int(page.text_of("pid"))
    assert user.post(page, page.click("exit")).status_code == 200
    assert wait_for_exit(pid, 10)
    assert user.post(page, page.click("inc")).json() == {"reload": True}


def test_idle_process_ends_after_timeout_inactivity(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1", "COUNTER_TIMEOUT_INACTIVITY": "1"})
    user = User(server.url)
    page = user.get()
    pid = int(page.text_of("pid"))
    started = time.monotonic()
    assert wait_for_exit(pid, 15)
    assert time.monotonic() - started >= 0.9
    assert user.get().text_of("pid") != str(pid)


def test_process_cap_ends_least_recently_used(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1", "COUNTER_MAX_PROCESSES": "2"})
    first, second, third = User(server.url), User(server.url), User(server.url)
    first_page = first.get()
    second_page = second.get()
    # A click engages first's process at once: second, never engaged, goes first at the cap.
    assert count_in(first.post(first_page, first_page.click("inc"))) == 1
    third_page = third.get()  # never an error page past the cap
    assert third_page.text_of("count") == "0"
    assert wait_for_exit(int(second_page.text_of("pid")), 10)
    assert count_in(first.post(first_page, first_page.click("inc"))) == 2
    assert second.post(second_page, second_page.click("inc")).json() == {"reload": True}
    status = httpx.get(server.url + "/status").json()
    assert len(status["processes"]) == 2


def test_fifty_users_arriving_at_once_are_all_served(serve):
    server = serve(COUNTER)

    def visit(_: int) -> str:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.get("/")
            assert response.status_code == 200
            return Page(response.text).text_of("pid")

    with ThreadPoolExecutor(50) as pool:
        pids = list(pool.map(visit, range(50)))
    assert len(set(pids)) == 50


def test_debug_shows_tracebacks_and_production_does_not(serve):
    production = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    user = User(production.url)
    page = user.get()
    err = user.post(page, page.click("boom")).json()["err"]
    assert "secret detail" not in err and "/srv" not in err and "Traceback" not in err
    # logged for the developer (by the app process: the line may follow the answer)
    assert production.wait_for_log("secret detail") >= 1
    debugging = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1", "COUNTER_DEBUG": "1"})
    user = User(debugging.url)
    page = user.get()
    err = user.post(page, page.click("boom")).json()["err"]
    assert "Traceback" in err and "secret detail" in err


def test_failing_init_shows_details_in_debug_only(serve):
    production = serve(COUNTER)
    page = User(production.url).http.get("/?explode").text
    assert "could not start" in page and "secret detail" not in page and "/srv" not in page
    debugging = serve(COUNTER, env={"COUNTER_DEBUG": "1"})
    assert "secret detail" in User(debugging.url).http.get("/?explode").text


def test_tag_update_pushes_and_generators_stream_over_websocket(serve):
    server = serve(COUNTER)
    user = User(server.url)
    page = user.get()
    with user.websocket(page) as ws:
        ws.send(json.dumps(page.click("ticks")))
        assert json.loads(ws.recv(timeout=10)) == {}  # the click itself changes nothing
        counts = [count_in_actions(json.loads(ws.recv(timeout=10))) for _ in range(3)]
        assert counts == [100, 200, 300]
        ws.send(json.dumps(page.click("stream")))
        streamed = []
        message = json.loads(ws.recv(timeout=10))
        while "next" in message:
            streamed.append(next(iter(message["stream"].values())))
            ws.send(json.dumps(_next_call(message["next"])))
            message = json.loads(ws.recv(timeout=10))
        assert [text_of_class(s, "streamed") for s in streamed] == ["s0", "s1", "s2"]


def _next_call(js: str) -> dict:
    from support import interaction_of

    return interaction_of(js)


def test_run_with_workers_shares_one_supervisor(serve):
    server = serve([sys.executable, "counter_workers.py"], ready_lines=3)
    user = User(server.url)
    page = user.get()
    for click in range(1, 13):
        assert count_in(user.post(page, page.click("inc"), fresh_connection=True)) == click
    assert len(list(server.runtime_dir.glob("*/supervisor.sock"))) == 1


def test_uvloop_serves_clicks_and_pushes(serve):
    uvicorn = [sys.executable, "-m", "uvicorn", "counter_server:app", "--port", "{port}"]
    server = serve([*uvicorn, "--loop", "uvloop"])
    user = User(server.url)
    page = user.get()
    with user.websocket(page) as ws:
        ws.send(json.dumps(page.click("inc")))
        assert count_in_actions(json.loads(ws.recv(timeout=10))) == 1
        ws.send(json.dumps(page.click("ticks")))
        assert json.loads(ws.recv(timeout=10)) == {}
        assert "update" in json.loads(ws.recv(timeout=10))


def test_two_servers_on_one_host_do_not_interfere(serve):
    first = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    second = serve(
        COUNTER,
        env={"COUNTER_HTTP_ONLY": "1", "HTAGWEB_RUNTIME_DIR": str(first.runtime_dir)},
    )
    second.marker = first.marker  # same runtime dir: leftovers are looked for there
    alice_first, alice_second = User(first.url), User(second.url)
    page_first, page_second = alice_first.get(), alice_second.get()
    assert count_in(alice_first.post(page_first, page_first.click("inc"))) == 1
    assert second.process is not None
    (second_dir,) = first.runtime_dir.glob(f"{second.process.pid}-*")  # named after its master
    second_supervisor = int((second_dir / "supervisor.pid").read_text())
    second.stop()
    assert wait_for_exit(second_supervisor, 15)
    assert wait_for_exit(int(page_second.text_of("pid")), 15)
    assert not second_dir.exists()
    assert count_in(alice_first.post(page_first, page_first.click("inc"))) == 2


def test_killed_supervisor_takes_its_apps_along_and_is_restarted(serve):
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1"})
    user = User(server.url)
    page = user.get()
    supervisor = server.supervisor_pid()
    os.kill(supervisor, signal.SIGKILL)
    assert wait_for_exit(supervisor, 10)
    assert wait_for_exit(int(page.text_of("pid")), 10)  # no orphan app process
    fresh = user.get()
    assert server.supervisor_pid() != supervisor
    assert count_in(user.post(fresh, fresh.click("inc"))) == 1


def test_cap_holds_when_a_crowd_arrives_at_once(serve):
    server = serve(COUNTER, env={"COUNTER_MAX_PROCESSES": "16"})

    def visit(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.get("/")
            assert response.status_code == 200  # past the cap: never an error page
            return int(Page(response.text).text_of("pid"))

    with ThreadPoolExecutor(40) as pool:
        served = set(pool.map(visit, range(40)))
    status = httpx.get(server.url + "/status").json()
    live = {p["pid"] for p in status["processes"]} | set(status["spares"])
    assert len(live) <= 16
    for pid in served - live:  # every other process the crowd got has really ended
        assert wait_for_exit(pid, 10)


def test_under_the_memory_reserve_a_new_user_replaces_the_least_recently_used(serve):
    # A reserve larger than the machine: memory is always short, whatever the count.
    server = serve(COUNTER, env={"COUNTER_HTTP_ONLY": "1", "COUNTER_MEMORY_RESERVE": str(1 << 60)})
    first, second = User(server.url), User(server.url)
    first_page = first.get()
    assert count_in(first.post(first_page, first_page.click("inc"))) == 1
    second_page = second.get()  # never an error page: the least recently used one ends
    assert wait_for_exit(int(first_page.text_of("pid")), 10)
    assert count_in(second.post(second_page, second_page.click("inc"))) == 1
    assert first.post(first_page, first_page.click("inc")).json() == {"reload": True}
    status = httpx.get(server.url + "/status").json()
    assert len(status["processes"]) == 1 and status["spares"] == []  # no spare costs a user


def ksm_flag(pid: int) -> str:
    """Whether the kernel may merge this process's pages (Linux >= 6.4 reports it)."""
    with open(f"/proc/{pid}/ksm_stat") as ksm_stat:
        stat = ksm_stat.read()
    return stat.split("ksm_merge_any:")[1].split()[0]


def test_merge_memory_marks_app_processes_mergeable_and_only_when_asked(serve):
    merged = serve(COUNTER, env={"HTAGWEB_MERGE_MEMORY": "1"})
    plain = serve(COUNTER)
    merged_pid = int(User(merged.url).get().text_of("pid"))
    plain_pid = int(User(plain.url).get().text_of("pid"))
    assert (ksm_flag(merged_pid), ksm_flag(plain_pid)) == ("yes", "no")
    with open("/sys/kernel/mm/ksm/run") as run:
        ksm_running = run.read().strip() == "1"
    if not ksm_running:  # asked for while the kernel's KSM daemon is off: the operator is told
        assert merged.wait_for_log("KSM is not running") == 1
    assert "KSM" not in plain.log


def test_websocket_attaches_to_the_instance_the_page_load_created(serve):
    server = serve(COUNTER)
    user = User(server.url)
    page = user.get()
    with user.websocket(page) as ws:
        # The GET's button ids work, and the process created exactly one instance.
        ws.send(json.dumps(page.click("inits")))
        assert count_in_actions(json.loads(ws.recv(timeout=10))) == 1


def test_runaway_init_is_ended_and_the_next_load_starts_fresh(serve):
    server = serve(COUNTER, env={"COUNTER_TIMEOUT_INTERACTION": "1"})
    user = User(server.url)
    stuck = user.http.get("/?hang")
    assert stuck.status_code == 504 and "longer than 1s" in stuck.text
    page = user.get()
    assert page.text_of("count") == "0"
