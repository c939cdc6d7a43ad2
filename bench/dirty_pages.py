"""What an app process copies of its template: the shared pages it writes to, by object type.

    python bench/dirty_pages.py [module:Class]     (default: bench_counter:App)

A template-like process imports htag and the app as the template does (rehearsal and
gc.freeze included), notes where each object it can find lives, and forks a child that
serves a page load and a click through htagweb's app-process loop, then waits. A third
process compares the two processes' page tables (/proc/<pid>/pagemap, which needs root
to show frame numbers): a page of the child's anonymous memory is

    shared   the same frame as the template's: costs the child nothing
    copied   the template had it, the child now has its own copy (it wrote to it)
    new      the template never had it: memory the child allocated

Copied pages are then told by what lives on them in the template (functions, dicts,
code, strings...), which is what issue 13 needs to know to stop them being copied. The
template stays blocked while the child runs, so none of its own writes count.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import struct
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PAGE = os.sysconf("SC_PAGE_SIZE")
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


def anonymous_regions(pid: int) -> list[tuple[int, int, str]]:
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        name = fields[5] if len(fields) > 5 else ""
        if name and name != "[heap]":
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        regions.append((start, end, name or "[anon]"))
    return regions


def frames(pid: int, start: int, end: int) -> list[int]:
    """The frame of each page in [start, end), 0 where none is present."""
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        pagemap.seek(start // PAGE * 8)
        data = pagemap.read((end - start) // PAGE * 8)
    entries = struct.unpack(f"{len(data) // 8}Q", data)
    return [e & PFN_MASK if e & PRESENT else 0 for e in entries]


def compare(template: int, child: int) -> dict[str, list[int]]:
    """The child's anonymous pages, by kind: shared, copied, new (page addresses)."""
    kinds: dict[str, list[int]] = {"shared": [], "copied": [], "new": []}
    for start, end, _ in anonymous_regions(child):
        theirs = frames(child, start, end)
        try:
            ours = frames(template, start, end)
        except OSError:
            ours = [0] * len(theirs)
        for index, frame in enumerate(theirs):
            if not frame:
                continue
            original = ours[index] if index < len(ours) else 0
            kind = "new" if not original else "shared" if original == frame else "copied"
            kinds[kind].append(start + index * PAGE)
    return kinds


def known_objects() -> list[object]:
    """The objects the collector knows, and what they hold (strings, ints, code...)."""
    found: dict[int, object] = {}
    for obj in gc.get_objects():
        for item in (obj, *gc.get_referents(obj)):
            found.setdefault(id(item), item)
    return list(found.values())


def object_map(objects: list[object]) -> dict[int, collections.Counter[str]]:
    """Per page, the types of the objects that start on it."""
    pages: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for item in objects:
        pages[id(item) // PAGE * PAGE][type(item).__name__] += 1
    return pages


def reference_counts(objects: list[object]) -> list[int]:
    # The same code in template and child: each holds the objects alike while counting.
    return [sys.getrefcount(objects[i]) for i in range(len(objects))]


def written(objects: list[object], counts: list[int]) -> collections.Counter[str]:
    """By type, the objects whose reference count is not what it was in the template."""
    now = reference_counts(objects)
    changed: collections.Counter[str] = collections.Counter()
    for i in range(len(objects)):
        if now[i] != counts[i]:
            changed[type(objects[i]).__name__] += 1
    return changed


async def serve_one_user(app_class: type) -> None:
    """A spare's warm-up, then a page load and a click through the app-process loop."""
    from htagweb.app import process

    await process._warm_up()
    await process.rehearsal(app_class, rounds=1)


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else "bench_counter:App"
    sys.path.insert(0, str(BENCH_DIR / "apps"))
    from htagweb import appref
    from htagweb.app import guard, inert, process
    from htagweb.host import template  # noqa: F401  (what a template imports)

    inert.activate()
    guard.record_bindings()
    module_name, _, class_name = target.partition(":")
    app_class = appref.find_class(appref.load_module(module_name), module_name, class_name)
    process.rehearse()
    gc.collect()
    objects = known_objects()  # before the freeze and the fork: nothing moves after this
    pages = object_map(objects)
    counts = reference_counts(objects)
    gc.freeze()
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    child = os.fork()
    if child == 0:
        asyncio.run(serve_one_user(app_class))
        os.write(ready_write, b"r")
        os.read(go_read, 1)  # stays alive, unchanged, while it is measured
        changed = written(objects, counts)
        print(f"objects of the template whose reference count the child changed: "
              f"{sum(changed.values()):,} of {len(objects):,}")  # fmt: skip
        for name, count in changed.most_common(12):
            print(f"  {name:28} {count:8,}")
        sys.stdout.flush()
        os._exit(0)
    os.read(ready_read, 1)
    measurer = subprocess.run(
        [sys.executable, __file__, "--compare", str(os.getpid()), str(child)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    os.write(go_write, b"g")
    os.waitpid(child, 0)
    kinds = {k: [int(a) for a in v.split(",") if a] for k, v in
             (line.split(":", 1) for line in measurer.stdout.splitlines())}  # fmt: skip
    report(kinds, pages)


def report(kinds: dict[str, list[int]], pages: dict[int, collections.Counter[str]]) -> None:
    kb = PAGE // 1024
    print("child's anonymous memory: " + ", ".join(
        f"{name} {len(addresses) * kb:,} kB" for name, addresses in kinds.items()))  # fmt: skip
    by_type: collections.Counter[str] = collections.Counter()
    unknown = 0
    for address in kinds["copied"]:
        found = pages.get(address)
        if not found:
            unknown += 1
            continue
        total = sum(found.values())
        for name, count in found.items():
            by_type[name] += count / total  # a page shared by its objects' types
    print(f"copied pages on which no known object starts: {unknown * kb:,} kB")
    print("copied pages by the types of the objects on them (kB):")
    for name, share in by_type.most_common(20):
        print(f"  {name:28} {share * kb:8,.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        result = compare(int(sys.argv[2]), int(sys.argv[3]))
        for kind, addresses in result.items():
            print(f"{kind}:" + ",".join(str(a) for a in addresses))
    else:
        main()
