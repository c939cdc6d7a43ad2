"""Capacity: how many live users one htagweb server holds on this machine.

    python bench/capacity.py                          500 to 5,000 users, htagweb's defaults
    python bench/capacity.py --users 50,100           a quick debugging run
    python bench/capacity.py --users 2000 --max-processes 2100
    python bench/capacity.py --merge-memory           the same, pages merged (KSM, root)

For each N, in ascending order, a fresh server (bench/apps/bench_server.py under one
uvicorn worker, as bench/run.py starts it; never two at once) gets N users: each loads
the counter page (20 at a time) and so gets its own app process. Then a few rounds in
which every user clicks "+" once over keep-alive HTTP (50 clicks in flight), each click
timed and checked: an answer that is not 200 with the user's next count is an error
(410 "reload": the user's process was ended, as at the process cap; a wrong count; a
timeout). Per N: click p50/p99, errors, the private memory of the whole server tree
(worker, supervisor, templates, spares, app processes: smaps_rollup Private_Clean +
Private_Dirty), server CPU per click, wall time. The largest N with click p99 under
100 ms and no error is the capacity.

The cap: without --max-processes, htagweb's own defaults (the process count from the
machine's memory, and the memory reserve past which each new user's process replaces the
least recently used one), through HTAGWEB_BENCH_MAX_PROCESSES=default (bench_server would
otherwise use 150). bench_server turns off the per-address limits (every bench user comes
from 127.0.0.1); everything else is the Runner's default.

--merge-memory serves with merge_memory (HTAGWEB_MERGE_MEMORY=1) and runs the kernel's KSM
daemon for the run (root: /sys/kernel/mm/ksm, put back as it was afterwards, merged pages
unmerged); its CPU is counted as the server's (role "ksmd").

Safety: before each N and every few users opened, MemAvailable is read; under 1 GiB
(--min-available-gib, below htagweb's own reserve, so that the server's reserve is what a
run meets first) no more users are opened and the N is reported "stopped: memory".

Each invocation adds its runs to bench/results/capacity.json (a run per cap and clicks in
flight: a later run with the same two replaces it; --fresh starts the file over) and rewrites
bench/results/capacity.md from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (
    RESULTS_DIR,
    KeepAlive,
    Server,
    Sizes,
    User,
    cpu_seconds,
    cpu_spent,
    environment,
    new_client,
    server_roles,
    smaps_rollup,
)

GIB = 1024**3
LATENCY_TARGET_MS = 100.0
CLICK_TIMEOUT = 10.0
MEMORY_CHECK_EVERY = 25  # users opened between two MemAvailable readings
KSM = Path("/sys/kernel/mm/ksm")
# The daemon's pace for a run: a page scanned 250,000 times a second (~1 GB/s), so that it
# keeps up with users arriving 20 at a time; its default (5,000 a second) takes minutes.
KSM_RUN_SETTINGS = {"pages_to_scan": "5000", "sleep_millisecs": "20", "run": "1"}


def mem_available() -> int:
    """MemAvailable, in bytes."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * share) - 1)]


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward `wanted` (the server inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Connection(KeepAlive):
    """A keep-alive connection that any user's click may take: the cookie goes per request,
    and any status is read whole (bench/run.py's KeepAlive raises on anything but 200)."""

    def __init__(self, port: int) -> None:
        super().__init__(port, "")

    async def click(self, path: str, body: bytes, cookie: str) -> tuple[int, str]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nCookie: %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.port, cookie.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = re.match(rb"HTTP/1\.1 (\d+) ", head)
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if status is None or length is None:
            raise RuntimeError(f"unexpected answer {head[:300]!r}")
        body_in = await self.reader.readexactly(int(length.group(1)))
        return int(status.group(1)), body_in.decode()


class Live:
    """One opened user: its page (endpoint, click) and cookie; its httpx client is closed."""

    def __init__(self, user: User) -> None:
        assert user.page is not None
        self.path = user.interaction_path
        self.click = user.page.click.encode()
        self.pid = user.page.pid
        self.cookie = "; ".join(f"{k}={v}" for k, v in user.http.cookies.items())
        self.count = 0


async def open_users(
    server: Server, n: int, concurrency: int, floor: int
) -> tuple[list[Live], list[float], list[str], str | None]:
    """Open up to n users; stop early when MemAvailable would go under `floor`."""
    opened: list[Live] = []
    times: list[float] = []
    errors: list[str] = []
    stopped: str | None = None
    next_index = 0
    lock = asyncio.Lock()

    async def one() -> None:
        user = User(server.url)
        start = time.perf_counter()
        try:
            await user.load("/")
            times.append(time.perf_counter() - start)
            opened.append(Live(user))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            await user.http.aclose()

    async def worker() -> None:
        nonlocal next_index, stopped
        while True:
            async with lock:
                if stopped is not None or next_index >= n:
                    return
                index = next_index
                next_index += 1
                if index % MEMORY_CHECK_EVERY == 0 and mem_available() < floor:
                    stopped = (
                        f"memory: MemAvailable under {floor / GIB:.1f} GiB after {index} users"
                    )
                    return
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return opened, times, errors, stopped


async def click_round(
    server: Server, users: list[Live], concurrency: int
) -> tuple[list[float], dict[str, int], list[str]]:
    """Every user clicks "+" once, `concurrency` clicks in flight, each on a pooled connection."""
    times: list[float] = []
    errors: dict[str, int] = {}
    samples: list[str] = []
    queue = iter(users)

    def failed(kind: str, detail: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1
        if len(samples) < 5:
            samples.append(f"{kind}: {detail[:200]}")

    async def worker() -> None:
        connection: Connection | None = None
        try:
            for user in queue:
                if connection is None:
                    connection = await Connection(server.port).__aenter__()
                start = time.perf_counter()
                try:
                    status, answer = await asyncio.wait_for(
                        connection.click(user.path, user.click, user.cookie), CLICK_TIMEOUT
                    )
                except Exception as exc:
                    kind = "timeout" if isinstance(exc, TimeoutError) else "connection"
                    failed(kind, f"{type(exc).__name__}: {exc}")
                    await connection.__aexit__()
                    connection = None
                    continue
                times.append(time.perf_counter() - start)
                if status == 410 and "reload" in answer:
                    failed("reload (410)", answer)
                elif status != 200:
                    failed(f"status {status}", answer)
                elif f">{user.count + 1}<" not in answer:
                    failed("wrong count", answer)
                else:
                    user.count += 1
        finally:
            if connection is not None:
                await connection.__aexit__()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times, errors, samples


async def tree_memory(server: Server) -> dict[str, Any]:
    """Private kB of every process of the server's tree, by role (from /status)."""
    async with new_client(server.url) as client:
        roles = await server_roles(server, client)
        status = (await client.get("/status")).json()
    roles.update({pid: "spare" for pid in status.get("spares", [])})
    by_role: dict[str, int] = {}
    counts: dict[str, int] = {}
    for pid, role in roles.items():
        with contextlib.suppress(OSError):
            rollup = smaps_rollup(pid)
            by_role[role] = by_role.get(role, 0) + rollup["Private_Clean"] + rollup["Private_Dirty"]
            counts[role] = counts.get(role, 0) + 1
    return {
        "private_kB": sum(by_role.values()),
        "private_kB_by_role": by_role,
        "processes_by_role": counts,
        "max_processes": status.get("max_processes"),
        "memory_reserve": status.get("memory_reserve", 0),
    }


async def measure(server: Server, n: int, args: argparse.Namespace) -> dict[str, Any]:
    floor = int(args.min_available_gib * GIB)
    result: dict[str, Any] = {"users_asked": n}
    began = time.perf_counter()
    client_cpu = sum(os.times()[:2])
    ksmd = ksmd_pid() if args.merge_memory else None

    def counted() -> list[int]:
        """The server's processes, and the kernel's KSM daemon when it works for it."""
        return server.pids() + ([ksmd] if ksmd else [])

    def with_ksmd(roles: dict[int, str]) -> dict[int, str]:
        return {**roles, ksmd: "ksmd"} if ksmd else roles

    before = cpu_seconds(counted())
    users, load_times, load_errors, stopped = await open_users(
        server, n, args.open_concurrency, floor
    )
    opened_at = time.perf_counter()
    after = cpu_seconds(counted())
    async with new_client(server.url) as client:
        roles = with_ksmd(await server_roles(server, client))
    loads = cpu_spent(before, after, roles, max(1, len(users)))
    result.update(
        users_opened=len(users),
        open_seconds=opened_at - began,
        open_errors=len(load_errors),
        open_error_samples=load_errors[:5],
        page_load_ms={
            "p50": percentile(load_times, 0.5) * 1e3 if load_times else None,
            "p99": percentile(load_times, 0.99) * 1e3 if load_times else None,
        },
        server_cpu_ms_per_page_load=loads["ms_exact"],
        stopped=stopped,
    )
    await asyncio.sleep(1.0)  # let spares and evictions settle
    if ksmd:
        result["ksm_settle_seconds"] = await ksm_settled()
    result["memory_after_open"] = await tree_memory(server)
    result["mem_available_GiB_after_open"] = mem_available() / GIB

    times: list[float] = []
    errors: dict[str, int] = {}
    samples: list[str] = []
    rounds = []
    before = cpu_seconds(counted())
    client_before = sum(os.times()[:2])
    clicks_began = time.perf_counter()
    for _ in range(args.rounds if users else 0):
        start = time.perf_counter()
        round_times, round_errors, round_samples = await click_round(
            server, users, args.click_concurrency
        )
        wall = time.perf_counter() - start
        times += round_times
        for kind, count in round_errors.items():
            errors[kind] = errors.get(kind, 0) + count
        samples += round_samples[: max(0, 5 - len(samples))]
        rounds.append(
            {
                "seconds": wall,
                "clicks_per_second": len(users) / wall,
                "p50_ms": percentile(round_times, 0.5) * 1e3 if round_times else None,
                "p99_ms": percentile(round_times, 0.99) * 1e3 if round_times else None,
                "errors": sum(round_errors.values()),
            }
        )
    clicks_wall = time.perf_counter() - clicks_began
    client_clicks = sum(os.times()[:2]) - client_before
    after = cpu_seconds(counted())
    async with new_client(server.url) as client:
        roles = with_ksmd(await server_roles(server, client))
    clicks = len(users) * len(rounds)
    cpu = cpu_spent(before, after, roles, max(1, clicks))
    memory = await tree_memory(server)
    p99 = percentile(times, 0.99) * 1e3 if times else None
    error_count = sum(errors.values())
    result.update(
        clicks=clicks,
        click_ms={
            "p50": percentile(times, 0.5) * 1e3 if times else None,
            "p90": percentile(times, 0.9) * 1e3 if times else None,
            "p99": p99,
            "max": max(times) * 1e3 if times else None,
        },
        click_errors=error_count,
        click_errors_by_kind=errors,
        click_error_samples=samples,
        rounds=rounds,
        clicks_per_second=clicks / clicks_wall if clicks_wall else None,
        server_cpu_ms_per_click=cpu["ms_exact"],
        server_cpu_ms_per_click_by_role=cpu["by_role_ms_exact"],
        server_cpu_share_of_machine=cpu["ms_exact"]
        * clicks
        / 1e3
        / clicks_wall
        / (os.cpu_count() or 1),
        client_cpu_ms_per_click=client_clicks * 1e3 / max(1, clicks),
        memory=memory,
        memory_private_MB=memory["private_kB"] / 1024,
        memory_per_user_kB=memory["private_kB"] / max(1, len(users)),
        memory_per_app_process_kB=memory["private_kB_by_role"].get("app", 0)
        / max(1, memory["processes_by_role"].get("app", 0)),
        mem_available_GiB_after_clicks=mem_available() / GIB,
        wall_seconds=time.perf_counter() - began,
        bench_client_cpu_seconds=sum(os.times()[:2]) - client_cpu,
    )
    result["held"] = bool(
        stopped is None
        and len(users) == n
        and not load_errors
        and error_count == 0
        and p99 is not None
        and p99 < LATENCY_TARGET_MS
    )
    return result


@contextlib.contextmanager
def ksm_running() -> Any:
    """The kernel's KSM daemon on at KSM_RUN_SETTINGS; its settings put back afterwards, and
    what it merged unmerged when it was off before."""
    saved = {name: (KSM / name).read_text().strip() for name in KSM_RUN_SETTINGS}
    try:
        for name, value in KSM_RUN_SETTINGS.items():
            (KSM / name).write_text(value)
        yield
    finally:
        if saved["run"] == "0":
            (KSM / "run").write_text("2")  # unmerge everything before stopping
        for name, value in saved.items():
            (KSM / name).write_text(value)


async def ksm_settled(timeout: float = 600.0) -> float:
    """Wait for two more full scans of the KSM daemon (a page is merged on the second scan
    that finds it unchanged); the seconds waited."""
    began = time.perf_counter()
    target = int((KSM / "full_scans").read_text()) + 2
    while int((KSM / "full_scans").read_text()) < target:
        if time.perf_counter() - began > timeout:
            raise TimeoutError("the KSM daemon did not finish two scans")
        await asyncio.sleep(0.5)  # the kernel offers no notification: poll its counter
    return time.perf_counter() - began


def ksmd_pid() -> int | None:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "ksmd":
                return int(comm.parent.name)
    return None


def run_one(n: int, cap: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh server, n users; the server is always stopped and its tree checked."""
    env = {"HTAGWEB_BENCH_MAX_PROCESSES": str(cap) if cap else "default"}
    if args.merge_memory:
        env["HTAGWEB_MERGE_MEMORY"] = "1"
    server = Server(env)
    result: dict[str, Any] = {"users_asked": n}
    try:
        server.start()
        result = asyncio.run(measure(server, n, args))
    except BaseException as exc:
        result["failed"] = f"{type(exc).__name__}: {exc}"
        print("".join(server.output[-30:]), file=sys.stderr)
        if not isinstance(exc, Exception):
            raise
    finally:
        killed = server.stop()
        result["leftover_processes_killed"] = len(killed)
        result["leftover_after_stop"] = len(server.pids())
    return result


def largest_held(runs: list[dict[str, Any]]) -> int | None:
    held = [r["users_asked"] for r in runs if r.get("held")]
    return max(held) if held else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def limit_of(r: dict[str, Any], cap: int) -> str:
    """What kept this N from being held, in a few words."""
    if r.get("failed"):
        return f"failed: {r['failed'][:80]}"
    if r.get("stopped"):
        return f"stopped: {r['stopped']}"
    reasons = []
    reloads = r.get("click_errors_by_kind", {}).get("reload (410)", 0)
    if reloads:
        reasons.append(
            f"cap {cap:,} or memory reserve: {reloads:,} clicks of evicted users answered "
            "410 reload"
        )
    others = r.get("click_errors", 0) - reloads
    if others:
        reasons.append(f"{others:,} other click errors")
    if r.get("open_errors"):
        reasons.append(f"{r['open_errors']} page loads failed")
    p99 = r.get("click_ms", {}).get("p99")
    if p99 is not None and p99 >= LATENCY_TARGET_MS:
        reasons.append(f"click p99 {p99:.0f} ms ≥ {LATENCY_TARGET_MS:.0f} ms")
    return "; ".join(reasons) or "held"


def idle_per_app_process_kB(r: dict[str, Any]) -> float:
    """Private kB per app process once the users were opened, before any click (merged, with
    --merge-memory: read after the KSM daemon's scans)."""
    opened = r.get("memory_after_open", {})
    apps = opened.get("processes_by_role", {}).get("app", 0)
    return float(opened.get("private_kB_by_role", {}).get("app", 0)) / max(1, apps)


def markdown(report: dict[str, Any]) -> str:
    info = report["environment"]
    lines = [
        "# htagweb capacity",
        "",
        f"Machine: {info['cpu_count']} CPUs, {report['mem_total_GiB']:.1f} GiB RAM; Python "
        f"{info['python']}, htag {info['htag']}; commit {info['commit']}"
        + (" (with uncommitted changes)" if info["uncommitted_changes"] else "")
        + f"; {info['date']}.",
        "",
        "Each N: a fresh server (one uvicorn worker, bench/apps/bench_server.py), N users "
        "each loading the counter page (its own app process), then rounds in which every "
        'user clicks "+" once over keep-alive HTTP (clicks in flight: see each run). A '
        "click is an error unless it answers 200 with the user's next count (410 "
        '"reload": the user\'s process was ended at the cap or the memory reserve). '
        "Memory: Private_Clean + Private_Dirty (smaps_rollup) summed over the whole server "
        "tree after the clicks. "
        "Server CPU: every process of the tree (schedstat), over the click rounds. The bench "
        "client runs on the same machine and shares its CPUs. **Held**: all N users opened, "
        f"no error, click p99 < {LATENCY_TARGET_MS:.0f} ms.",
        "",
    ]
    for run in report["runs"]:
        cap = run["max_processes"]
        lines += [
            f"## {'defaults' if run.get('defaults') else f'max_processes = {cap:,}'}"
            f"{', merge_memory' if run.get('merge_memory') else ''} ({run['cap_source']}), "
            f"{run['click_concurrency']} clicks in flight",
            "",
            f"Command: `{run['command']}`; {run['rounds']} click rounds, "
            f"{run['click_concurrency']} clicks in flight, users opened "
            f"{run['open_concurrency']} at a time. Largest N held: "
            f"**{fmt(run['largest_held'], 0) if run['largest_held'] else 'none'}**.",
            "",
            "| N users | opened | click p50 | click p99 (by round) | click errors | server private "
            "memory | per user | per app process | per app process before the clicks | server "
            "CPU / click | client CPU / click | clicks/s | page load p50 / p99 | wall | held "
            "| limit |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---|",
        ]
        for r in run["results"]:
            if r.get("failed") and "click_ms" not in r:
                lines.append(
                    f"| {r['users_asked']:,} | | | | | | | | | | | | | | no | {limit_of(r, cap)} |"
                )
                continue
            ms = r["click_ms"]
            apps = r["memory"]["processes_by_role"].get("app", 0)
            rounds = ", ".join(fmt(x["p99_ms"], 0) for x in r["rounds"])
            lines.append(
                f"| {r['users_asked']:,} | {r['users_opened']:,} | {fmt(ms['p50'])} ms "
                f"| {fmt(ms['p99'])} ms ({rounds}) | {r['click_errors']:,} / {r['clicks']:,} "
                f"| {fmt(r['memory_private_MB'], 0)} MB ({apps:,} app processes) "
                f"| {fmt(r['memory_per_user_kB'] / 1024, 2)} MB "
                f"| {fmt(r['memory_per_app_process_kB'] / 1024, 2)} MB "
                f"| {fmt(idle_per_app_process_kB(r) / 1024, 2)} MB "
                f"| {fmt(r['server_cpu_ms_per_click'], 2)} ms "
                f"| {fmt(r['client_cpu_ms_per_click'], 2)} ms "
                f"| {fmt(r['clicks_per_second'], 0)} "
                f"| {fmt(r['page_load_ms']['p50'])} / {fmt(r['page_load_ms']['p99'])} ms "
                f"| {fmt(r['wall_seconds'], 0)} s | {'**yes**' if r['held'] else 'no'} "
                f"| {limit_of(r, cap)} |"
            )
        lines.append("")
        for r in run["results"]:
            roles = r.get("server_cpu_ms_per_click_by_role")
            if roles:
                split = ", ".join(f"{k} {v:.2f}" for k, v in roles.items())
                lines.append(
                    f"- N = {r['users_asked']:,}: server CPU per click by role (ms): {split}; "
                    f"server took {r['server_cpu_share_of_machine'] * 100:.0f} % of the machine "
                    f"during the clicks; page load {fmt(r['server_cpu_ms_per_page_load'], 2)} ms "
                    f"server CPU; MemAvailable after {r['mem_available_GiB_after_clicks']:.1f} GiB."
                )
        lines.append("")
    if report.get("notes"):
        lines += ["## Notes", "", report["notes"].strip(), ""]
    return "\n".join(lines)


def run_all(ns: list[int], cap: int | None, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each N in turn, a fresh server each; stops at the first N stopped or failed."""
    results: list[dict[str, Any]] = []
    floor = int(args.min_available_gib * GIB)
    for n in ns:
        if mem_available() < floor:
            results.append(
                {
                    "users_asked": n,
                    "held": False,
                    "stopped": "memory: under the floor before the server started",
                }
            )
            break
        print(f"N = {n:,} (cap {cap or 'default'}) ...", flush=True)
        result = run_one(n, cap, args)
        results.append(result)
        print(json.dumps({k: result.get(k) for k in (
            "users_opened", "click_ms", "click_errors", "click_errors_by_kind",
            "memory_private_MB", "server_cpu_ms_per_click", "wall_seconds", "stopped",
            "failed", "held")}), flush=True)  # fmt: skip
        if result.get("stopped") or result.get("failed"):
            break
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="500,1000,2000,5000", help="comma-separated Ns")
    parser.add_argument(
        "--max-processes",
        type=int,
        default=None,
        help="the process cap (default: htagweb's own defaults)",
    )
    parser.add_argument(
        "--merge-memory", action="store_true", help="merge_memory on, KSM running (root)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="click rounds per N")
    parser.add_argument("--open-concurrency", type=int, default=20)
    parser.add_argument("--click-concurrency", type=int, default=50)
    parser.add_argument("--min-available-gib", type=float, default=1.0)
    parser.add_argument("--fresh", action="store_true", help="start capacity.json over")
    parser.add_argument("--notes", type=Path, help="a text file: the report's notes")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite capacity.md from capacity.json"
    )
    args = parser.parse_args()
    path = RESULTS_DIR / "capacity.json"
    if args.report_only:
        report = json.loads(path.read_text())
        if args.notes:
            report["notes"] = args.notes.read_text()
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        (RESULTS_DIR / "capacity.md").write_text(markdown(report))
        return
    ns = sorted(int(n) for n in args.users.split(","))
    cap = args.max_processes
    source = "--max-processes" if cap else "htagweb's defaults"
    fds = raise_fd_limit(4 * max(ns) + 1024)
    with ksm_running() if args.merge_memory else contextlib.nullcontext():
        results = run_all(ns, cap, args)
    served = [r["memory"] for r in results if "memory" in r]
    if served:
        source += (
            f": max_processes {served[0]['max_processes']:,}, memory reserve "
            f"{served[0]['memory_reserve'] / GIB:.1f} GiB"
        )
    if args.merge_memory:
        source += ", merge_memory with KSM running"

    report: dict[str, Any] = {}
    if path.exists() and not args.fresh:
        report = json.loads(path.read_text())
    run = {
        "max_processes": cap or (served[0]["max_processes"] if served else 0),
        "defaults": cap is None,
        "merge_memory": args.merge_memory,
        "cap_source": source,
        "command": shlex.join(["python", *sys.argv]),
        "rounds": args.rounds,
        "click_concurrency": args.click_concurrency,
        "open_concurrency": args.open_concurrency,
        "fd_soft_limit": fds,
        "largest_held": largest_held(results),
        "results": results,
    }

    def key_of(r: dict[str, Any]) -> tuple[Any, ...]:
        cap_key = "default" if r.get("defaults") else r["max_processes"]
        return (cap_key, r["click_concurrency"], r.get("merge_memory", False))

    runs = [r for r in report.get("runs", []) if key_of(r) != key_of(run)] + [run]
    if args.notes:
        report["notes"] = args.notes.read_text()
    report.update(
        environment={
            k: v
            for k, v in environment("python -m uvicorn bench_server:app", Sizes()).items()
            if k != "sizes"
        },
        mem_total_GiB=os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB,
        runs=sorted(
            runs,
            key=lambda r: (
                not r.get("defaults"),
                r.get("merge_memory", False),
                r["max_processes"],
                -r["click_concurrency"],
            ),
        ),
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (RESULTS_DIR / "capacity.md").write_text(markdown(report))
    print(markdown(report))
    if any(r.get("leftover_after_stop") or r.get("leftover_processes_killed") for r in results):
        sys.exit("server processes were left after a stop")


if __name__ == "__main__":
    main()
