"""`python -m htagweb`: serve an htag app (or browse a folder of them) while developing."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .app import OPTIONS_VARIABLE, TARGET_VARIABLE, build, guard
from .folder import ROOT_VARIABLE
from .targets import DevError

USAGE_EXAMPLES = """
target forms: main:App, main.py, main, main.App (default: index.py's App, else a
browser of this folder's htag apps)
"""


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m htagweb",
        description="Serve an htag app for development.",
        epilog=USAGE_EXAMPLES,
    )
    parser.add_argument("target", nargs="?", default="", help="the app to serve at /")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--http-only", action="store_true", help="interactions over HTTP")
    parser.add_argument("--parano", action="store_true", help="sealed interactions")
    parser.add_argument("--debug", action="store_true", help="tracebacks in pages and here")
    parser.add_argument(
        "--reload", action="store_true", help="restart on .py changes; open pages reload"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    root = Path.cwd()
    options = {
        "debug": args.debug,
        "parano": args.parano,
        "http_only": args.http_only,
        "reload": args.reload,
        "host": args.host,
    }
    # The serving process (a fresh one after each reload) and app processes read these.
    os.environ[ROOT_VARIABLE] = str(root)
    os.environ[TARGET_VARIABLE] = args.target
    os.environ[OPTIONS_VARIABLE] = json.dumps(options)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the app's own imports of its neighbours
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    try:
        app = build(root, args.target, options)  # errors show here, before serving
    except DevError as exc:
        if args.debug:
            raise
        print(f"htagweb: {exc}", file=sys.stderr)  # noqa: T201
        return 1

    import uvicorn

    if args.reload:
        uvicorn.run(
            "htagweb.devserver.app:create",
            factory=True,
            host=args.host,
            port=args.port,
            reload=True,
            reload_dirs=[str(root)],
            reload_includes=["*.py"],
        )
    else:
        guard(app, args.host)
        uvicorn.run(app, host=args.host, port=args.port)
    return 0
