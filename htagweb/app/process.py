"""The loop inside one user's app process: it holds htag's HRenderer and answers workers.

One process serves one (session, app). Workers connect to its Unix socket and send
framed requests (the AppRequest and AppReply types of htagweb.wire.messages):

    render    a fresh instance of the app (a page load) -> page {html, instance}
    interact  one htag interaction -> actions (sealed, in parano mode)
    attach    this connection now receives tag.update() pushes (a WebSocket page, or
              the Server-Sent Events stream of an HTTP page) -> attached; in parano mode it
              carries the socket's key exchange ("hello") or the event stream's proof
    handshake parano mode: keys for an HTTP page (a WebSocket page's come with attach)
              -> keys

Any of them may get reload (no live instance for this page), error, and in parano mode
rekey; an interaction past the rate limit gets limited. Pushes come down an attached
connection as actions or sealed, without a rid.

A request whose "instance" is not the live one (an older tab) gets the live page
instead of driving a dead instance. Each browser page numbers its interactions
("page", "seq"): one it sends again after a lost connection is answered, not applied
twice (see htagweb.app.pages).

An interaction or a render that runs longer than timeout_interaction ends the process
through SIGALRM's default action: this is the only way to stop runaway synchronous code.

In parano mode, interactions, answers and pushes are sealed (see htagweb.app.sealing):
this process holds the keys, so workers and proxies only carry sealed messages, and
plaintext interactions are refused.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from htag import Tag
from htag.render import HRenderer

from .. import limits
from ..htag_internals import page_scripts, running_generators
from ..wire.ipc import MAX_FRAME_BYTES, FrameError, RpcClient, encode_frame, read_frame
from ..wire.messages import (
    AppOptions,
    AppReply,
    AppRequest,
    Attached,
    AttachRequest,
    InteractRequest,
    PageSettings,
    RenderRequest,
)
from . import guard
from .lifetime import Lifetime
from .pages import LivePages, Subscriber, numbered
from .session_link import SessionLink

if TYPE_CHECKING:
    from .parano import PageCipher
    from .sealing import SealedPages

logger = logging.getLogger(__name__)

GENERIC_ERROR = "The app failed on this action; the error was logged on the server."
REFUSED = "This action is not allowed."
INIT_FAILED = "The app could not start; the error was logged on the server."
PLAINTEXT_REFUSED = "This app takes sealed interactions only (parano mode)."
REHEARSAL_ROUNDS = 20  # past Python's warm-up of a function (8 calls in 3.11)


class AppProcess:
    """Serves one user's instance of one app over the listening socket it was given."""

    def __init__(self, tag_class: type[Tag]) -> None:
        self.tag_class = tag_class
        self.session = SessionLink()
        self.renderer: HRenderer | None = None
        self.instance = ""
        self.debug = False
        self.rate_limit = limits.RateLimit(0)
        self.parano = False
        self.sealing: SealedPages | None = None  # parano mode: made at the first handshake
        self.pages = LivePages(self._cipher_of)
        self._lock = asyncio.Lock()
        self.lifetime = Lifetime(busy=self._lock.locked)

    async def serve(self, listener: socket.socket) -> None:
        server = await asyncio.start_unix_server(
            self._serve_connection, sock=listener, limit=MAX_FRAME_BYTES
        )
        await _warm_up()
        await self.lifetime.done.wait()
        self.session.save()  # what a background task changed since its last push
        server.close()
        logger.debug("app process %s ends", os.getpid())

    # -- connections -----------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while (message := await read_frame(reader)) is not None:
                try:
                    reply = await self._dispatch(message, writer)
                except Exception as exc:  # the session store failed, for instance
                    logger.exception("app process %s could not answer", os.getpid())
                    reply = {"kind": "error", "error": f"{type(exc).__name__}: {exc}"}
                if isinstance(message, dict) and "rid" in message:
                    reply["rid"] = message["rid"]
                reply["timeout_interaction"] = self.lifetime.timeout_interaction
                writer.write(encode_frame(reply))
                await writer.drain()
                if self.lifetime.exit_requested:
                    self.lifetime.done.set()
        except (FrameError, ConnectionError) as exc:
            logger.debug("connection dropped: %s", exc)
        finally:
            self.pages.subscribers.pop(writer, None)
            writer.close()

    async def _dispatch(self, message: Any, writer: asyncio.StreamWriter) -> AppReply:
        if not isinstance(message, dict):
            return {"kind": "error", "error": "a request must be a JSON object"}
        if message.get("op") not in ("interact", "render", "attach", "handshake"):
            return {"kind": "error", "error": f"unknown op {message.get('op')!r}"}
        request = cast(AppRequest, message)
        if request["op"] == "interact":
            return await self._interact(request, writer)
        if request["op"] == "render":
            return await self._render(request)
        if request["op"] == "attach":
            return await self._attach(request, writer)
        return self._handshake(request.get("page"), request.get("hello"))

    # -- page loads ------------------------------------------------------------------------

    async def _render(self, request: RenderRequest) -> AppReply:
        self.lifetime.note_activity()
        self._apply_options(request["options"])
        args, kargs = request.get("init") or ([], {})
        session = self.session.open(request["session"])
        async with self._lock:
            self.renderer = None  # the previous instance dies with this page load
            session.refresh()
            instance = secrets.token_urlsafe(12)
            with self.lifetime.deadline():
                renderer = HRenderer(
                    guard.created_from_url(self.tag_class),
                    js="",
                    init=(tuple(args), dict(kargs)),
                    fullerror=self.debug,
                    statics=client_scripts(request["page"], instance, self.parano),
                    session=session,
                    exit_callback=self.lifetime.request_exit,
                )
                if not isinstance(renderer.tag, self.tag_class):
                    # htag caught an exception in the app's init and put its text, unescaped
                    # (it may quote what a URL gave), in the page.
                    shown = "".join(str(child) for child in renderer.tag.childs)
                    renderer.tag.clear(html.escape(shown) if self.debug else INIT_FAILED)
                page_html = str(renderer)
            self.session.save()  # what init changed in place
            renderer.sendactions = self._pusher(renderer)
            self.renderer, self.instance = renderer, instance
        self.lifetime.schedule_idle_check()
        return {"kind": "page", "html": page_html, "instance": instance}

    def _apply_options(self, options: AppOptions) -> None:
        self.debug = bool(options.get("debug"))
        self.lifetime.timeout_interaction = float(options.get("timeout_interaction") or 0)
        self.lifetime.timeout_inactivity = float(options.get("timeout_inactivity") or 0)
        self.parano = self.pages.sealed_only = bool(options.get("parano"))
        rate = float(options.get("interactions_per_second") or 0)
        if rate != self.rate_limit.rate:
            self.rate_limit = limits.RateLimit(rate)

    # -- interactions ----------------------------------------------------------------------

    async def _interact(self, request: InteractRequest, writer: asyncio.StreamWriter) -> AppReply:
        self.lifetime.note_activity()
        if not self.rate_limit.allow():
            return {"kind": "limited"}
        subscriber = self.pages.subscribers.get(writer)
        page = request.get("page") if subscriber is None else subscriber.page

        async def apply(payload: dict[str, Any]) -> dict[str, Any]:
            return await self._apply(payload, request, writer, page)

        sealed = request.get("sealed")
        if sealed is not None:
            if self.sealing is None:
                return {"kind": "reload"}  # no keys were ever agreed: a page load agrees some
            return await self.sealing.interact(page, sealed, apply)
        if self.parano:
            logger.warning("refused a plaintext interaction (parano mode)")
            return {"kind": "actions", "actions": {"err": PLAINTEXT_REFUSED}}
        return {"kind": "actions", "actions": await apply(request["payload"])}

    async def _apply(
        self,
        payload: dict[str, Any],
        request: InteractRequest,
        writer: asyncio.StreamWriter,
        page: str | None,
    ) -> dict[str, Any]:
        """Run one interaction; the actions that answer it.

        HTTP requests name their page's instance; a WebSocket page is known by its
        connection. A page showing an older instance gets the live one instead."""
        async with self._lock:
            if self.renderer is None:
                return {"reload": True}
            subscriber = self.pages.subscribers.get(writer)
            shown = request.get("instance", subscriber.instance if subscriber else None)
            seq = payload.get("seq")
            if shown not in (None, self.instance):
                self.pages.move_to(self.instance, subscriber, page)
                return numbered(self._live_page(), seq)
            answered = self.pages.answer_of(page, seq)
            if answered is not None:
                return answered
            refused = guard.refusal(
                running_generators(self.renderer), payload.get("id"), payload.get("method")
            )
            if refused:
                logger.warning("refused an interaction: %s", refused)
                return numbered({"err": REFUSED}, seq)
            actions = await self._run(payload)
            self.pages.remember(page, seq, actions)
        self.pages.broadcast(self.instance, actions, exclude=writer, page=page)
        return numbered(actions, seq)

    async def _run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """htag's interaction, between the session's refresh and its save."""
        assert self.renderer is not None
        self.session.refresh()
        with self.lifetime.deadline():
            actions: dict[str, Any] = await self.renderer.interact(
                payload.get("id"),
                payload.get("method"),
                payload.get("args") or [],
                payload.get("kargs") or {},
                payload.get("event"),
            )
        unsaved = self.session.save()  # what the interaction changed in place
        if unsaved:
            actions["err"] = unsaved
        if "err" in actions and not self.debug:
            actions["err"] = GENERIC_ERROR
        return actions

    # -- connections of live pages ---------------------------------------------------------

    async def _attach(self, request: AttachRequest, writer: asyncio.StreamWriter) -> AppReply:
        self.lifetime.note_activity()
        page = request.get("page")
        page = page if isinstance(page, str) else None
        reply: Attached = {"kind": "attached"}
        if "hello" in request:  # a parano WebSocket: its keys come first
            keys = self._handshake(page, request["hello"])
            if keys["kind"] != "keys":
                return keys  # no keys: the page's own connection keeps its keys and pushes
            reply["hello"] = keys["hello"]
        elif self.parano and not self._stream_proven(page, request.get("proof")):
            # Neither a key exchange nor an event stream proven with the page's keys: opened
            # in the page's name by someone who read its id, it must not take its pushes.
            return {"kind": "reload"}
        subscriber = Subscriber(str(request.get("instance")), page)
        async with self._lock:  # a page load under way replaces the renderer
            if self.renderer is None:
                return {"kind": "reload"}
            # Registered only now, with no wait before the answer is written: no push can
            # reach the page before this answer (and its keys, in parano mode).
            self.pages.subscribe(writer, subscriber)
            live_page: dict[str, Any] | None = None
            if request.get("instance") != self.instance or request.get("refresh"):
                # A page that reconnects may have missed pushes: it gets the current tree
                # (whose scripts run again, as after a page load).
                subscriber.instance = self.instance
                live_page = self._live_page()
        if live_page is not None:
            sealed = self.sealing.seal_push(page, live_page) if self.sealing else None
            if sealed is not None:
                reply["sealed"] = sealed
            elif not self.parano:
                reply["actions"] = live_page
        return reply

    def _handshake(self, page: Any, hello: Any) -> AppReply:
        if self.sealing is None:
            from .sealing import SealedPages  # only parano pages load the cryptography

            self.sealing = SealedPages()
        return self.sealing.handshake(page, hello, self.pages.pages())

    def _stream_proven(self, page: str | None, proof: Any) -> bool:
        return self.sealing is not None and self.sealing.stream_proven(page, proof)

    def _cipher_of(self, page: str | None) -> PageCipher | None:
        return self.sealing.cipher_of(page) if self.sealing else None

    def _live_page(self) -> dict[str, Any]:
        """Actions that replace the browser's page by the live instance's."""
        assert self.renderer is not None
        root = self.renderer.tag
        with self.lifetime.deadline():
            body = str(root)
            scripts = "\n".join(page_scripts(root))
        return {"update": {"0": body}, "post": scripts, "instance": self.instance}

    def _pusher(self, renderer: HRenderer) -> Callable[[dict[str, Any]], Awaitable[bool]]:
        """tag.update() for the tags of `renderer`: sent to the pages showing it."""

        async def push(actions: dict[str, Any]) -> bool:
            self.session.save()  # what the code pushing changed in place
            pages = self.pages.showing(self.instance) if renderer is self.renderer else []
            if not pages:  # no page, or an instance replaced by a page load (its task lives on)
                return False
            self.pages.send(pages, actions)
            return True

        return push


def client_scripts(page: PageSettings, instance: str, parano: bool) -> list[Tag]:
    """The script tags that put htagweb's client in a page (its settings in data-*)."""
    client = Tag.script(
        _src=page["client_src"],
        _data_endpoint=page["endpoint"],
        _data_mode=page["mode"],
        _data_instance=instance,
        _data_heartbeat=page.get("heartbeat", 0),
        _data_parano="1" if parano else "0",
        _data_boot=page.get("boot", ""),
    )
    if parano:  # before client.js, which takes what parano.js defines
        return [Tag.script(_src=page["parano_src"]), client]
    return [client]


class _WarmUp(Tag.div):
    """A built-in page rendered once before the first user arrives (no app code runs)."""

    def init(self) -> None:
        self.shown = Tag.span("0")
        self += self.shown
        self += Tag.button("+", _onclick=self.clicked)

    def clicked(self, event: Any) -> None:
        self.shown.clear("1")


async def _warm_up() -> None:
    """Render and click a throwaway page, so the first user's render runs on warm paths.

    A forked process pays a copy-on-write fault for each page its first render touches
    (htag's code and classes are shared with the template); paying it here, while the
    process waits as a spare, takes that time off the first page load.
    """
    renderer = HRenderer(_WarmUp, js="", session={}, statics=[Tag.script(_src="")])
    str(renderer)
    button = renderer.tag.childs[1]
    await renderer.interact(id(button), "__on__", [f"onclick-{id(button)}"], {}, {})


def rehearse(rounds: int = REHEARSAL_ROUNDS) -> None:
    """Serve a throwaway page through this module's whole request loop, `rounds` times.

    Run by the template before it forks: Python 3.11 rewrites the bytecode of a function
    as it warms up (counters, then specialised instructions), so code first run in an app
    process copies the pages it lives on into that process. Run here first, it is warm in
    the template, and its pages stay shared with every app process. No app code runs.
    """
    asyncio.run(rehearsal(_WarmUp, rounds))


async def rehearsal(tag_class: type[Tag], rounds: int) -> None:
    """A page load and a click on its first button, `rounds` times, sent to a throwaway
    AppProcess of `tag_class` as a worker sends them (bench/dirty_pages.py uses it too)."""
    app = AppProcess(tag_class)
    ours, theirs = socket.socketpair()
    server_side = await asyncio.open_unix_connection(sock=theirs)
    serving = asyncio.ensure_future(app._serve_connection(*server_side))
    client = RpcClient(*await asyncio.open_unix_connection(sock=ours))
    store = {"kind": "memory", "max_bytes": 1 << 20, "idle_expiry": 60}
    render: RenderRequest = {
        "op": "render",
        "init": [[], {}],
        "page": {"client_src": "", "parano_src": "", "endpoint": "", "mode": "ws",
                 "heartbeat": 0, "boot": ""},
        "session": {"id": "rehearsal", "store": store},
        "options": {"debug": False, "parano": False, "timeout_interaction": 0,
                    "timeout_inactivity": 0, "interactions_per_second": 0},
    }  # fmt: skip
    for _ in range(rounds):
        await client.call(dict(render))
        assert app.renderer is not None
        button = next(t for t in app.renderer.tag.childs if getattr(t, "tag", "") == "button")
        click = {"id": id(button), "method": "__on__", "args": [f"onclick-{id(button)}"],
                 "kargs": {}, "event": {}, "seq": 1}  # fmt: skip
        await client.call({"op": "interact", "page": "rehearsal", "payload": click})
    client.close()
    await serving


def run(tag_class: type[Tag], listener: socket.socket) -> int:
    """Serve until the app ends; returns the process exit code."""
    # The default action of SIGALRM ends the process: that is the interaction deadline.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    listener.setblocking(False)
    try:
        asyncio.run(AppProcess(tag_class).serve(listener))
    except Exception:
        logger.exception("app process %s failed", os.getpid())
        return 1
    return 0
