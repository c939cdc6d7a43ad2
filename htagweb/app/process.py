"""The loop inside one user's app process: it holds htag's HRenderer and answers workers.

One process serves one (session, app). Workers connect to its Unix socket and send
framed requests (see htagweb.wire.ipc):

    render    a fresh instance of the app (a page load); answers the full HTML
    interact  one htag interaction; answers htag's actions
    attach    this connection now receives tag.update() pushes (a WebSocket page, or
              the Server-Sent Events stream of an HTTP page); in parano mode it carries
              the socket's key exchange ("hello") or the event stream's proof ("proof")
    handshake parano mode: keys for an HTTP page (a WebSocket page's come with attach)

A request whose "instance" is not the live one (an older tab) gets the live page
instead of driving a dead instance. Each browser page numbers its interactions
("page", "seq"): one it sends again after a lost connection is answered, not applied
twice.

An interaction or a render that runs longer than timeout_interaction ends the process
through SIGALRM's default action: this is the only way to stop runaway synchronous code.

In parano mode, interactions, answers and pushes are sealed (see htagweb.app.parano): this
process holds the keys, so workers and proxies only carry sealed messages, and
plaintext interactions are refused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from htag import Tag
from htag.render import HRenderer

from .. import limits
from ..htag_internals import page_scripts, running_generators
from ..runtime import mark_used
from ..sessions import SessionError, SessionStore, open_store
from ..sessions.views import AppSession
from ..wire.ipc import MAX_FRAME_BYTES, FrameError, encode_frame, read_frame
from ..wire.protocol import InvalidInteraction, parse_interaction
from . import guard

if TYPE_CHECKING:
    from .parano import PageCipher, PageKeys

logger = logging.getLogger(__name__)

_store: SessionStore | None = None  # opened after the fork: connections never cross one

GENERIC_ERROR = "The app failed on this action; the error was logged on the server."
REFUSED = "This action is not allowed."
INIT_FAILED = "The app could not start; the error was logged on the server."
PLAINTEXT_REFUSED = "This app takes sealed interactions only (parano mode)."
TOUCH_INTERVAL = 1.0  # seconds between two updates of the use clock (see runtime.mark_used)
PAGES_REMEMBERED = 64  # pages whose last interaction number is kept (for resends)


class _Subscriber:
    """A connection receiving pushes: the page it serves and the instance that page shows."""

    __slots__ = ("instance", "page")

    def __init__(self, instance: str, page: str | None) -> None:
        self.instance = instance
        self.page = page


class AppProcess:
    """Serves one user's instance of one app over the listening socket it was given."""

    def __init__(self, tag_class: type[Tag], socket_path: str) -> None:
        self.tag_class = tag_class
        self.socket_path = socket_path
        self.session: AppSession | None = None
        self.renderer: HRenderer | None = None
        self.instance = ""
        self.debug = False
        self.timeout_interaction = 0.0
        self.timeout_inactivity = 0.0
        self.rate_limit = limits.RateLimit(0)
        self.parano = False
        self._keys: PageKeys | None = None  # parano mode: made at the first handshake
        self._lock = asyncio.Lock()
        # Connections of live pages (WebSocket, or an HTTP page's event stream).
        self._subscribers: dict[asyncio.StreamWriter, _Subscriber] = {}
        # The last interaction applied per page, with its answer: sent again (its answer
        # was lost), it gets that answer instead of being applied twice.
        self._answers: collections.OrderedDict[str, tuple[int, dict[str, Any]]] = (
            collections.OrderedDict()
        )
        self._done = asyncio.Event()
        self._exit_requested = False
        self._last_activity = time.monotonic()
        self._last_touch = 0.0
        self._engaged_at = 0.0  # when a page last interacted or connected (0: never)
        self._idle_timer: asyncio.TimerHandle | None = None

    async def serve(self, listener: socket.socket) -> None:
        server = await asyncio.start_unix_server(
            self._serve_connection, sock=listener, limit=MAX_FRAME_BYTES
        )
        await _warm_up()
        await self._done.wait()
        self._save_session()  # what a background task changed since its last push
        server.close()
        logger.debug("app process %s ends", os.getpid())

    # -- connections ---------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while (message := await read_frame(reader)) is not None:
                try:
                    reply = await self._dispatch(message, writer)
                except Exception as exc:  # the session store failed, for instance
                    logger.exception("app process %s could not answer", os.getpid())
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                reply["rid"] = message.get("rid")
                reply["timeout_interaction"] = self.timeout_interaction
                writer.write(encode_frame(reply))
                await writer.drain()
                if self._exit_requested:
                    self._done.set()
        except (FrameError, ConnectionError) as exc:
            logger.debug("connection dropped: %s", exc)
        finally:
            self._subscribers.pop(writer, None)
            writer.close()

    async def _dispatch(self, message: Any, writer: asyncio.StreamWriter) -> dict[str, Any]:
        if not isinstance(message, dict):
            return {"error": "a request must be a JSON object"}
        op = message.get("op")
        if op == "interact":
            return await self._interact(message, writer)
        if op == "render":
            return await self._render(message)
        if op == "attach":
            return await self._attach(message, writer)
        if op == "handshake":
            return self._handshake(message.get("page"), message.get("hello"))
        return {"error": f"unknown op {op!r}"}

    # -- requests ------------------------------------------------------------------

    async def _render(self, message: dict[str, Any]) -> dict[str, Any]:
        self.socket_path = message.get("socket", self.socket_path)  # a spare was renamed
        self._note_activity()
        options = message.get("options", {})
        self.debug = bool(options.get("debug"))
        self.timeout_interaction = float(options.get("timeout_interaction") or 0)
        self.timeout_inactivity = float(options.get("timeout_inactivity") or 0)
        self.parano = bool(options.get("parano"))
        rate = float(options.get("interactions_per_second") or 0)
        if rate != self.rate_limit.rate:
            self.rate_limit = limits.RateLimit(rate)
        page = message["page"]
        args, kargs = message.get("init") or ([], {})
        session = self._session(message["session"])
        async with self._lock:
            self.renderer = None  # the previous instance dies with this page load
            session.refresh()
            instance = secrets.token_urlsafe(12)
            client = Tag.script(
                _src=page["client_src"],
                _data_endpoint=page["endpoint"],
                _data_mode=page["mode"],
                _data_instance=instance,
                _data_heartbeat=page.get("heartbeat", 0),
                _data_parano="1" if self.parano else "0",
                _data_boot=page.get("boot", ""),
            )
            statics = [client]
            if self.parano:  # before client.js, which takes what parano.js defines
                statics.insert(0, Tag.script(_src=page["parano_src"]))
            with self._deadline():
                renderer = HRenderer(
                    guard.created_from_url(self.tag_class),
                    js="",
                    init=(tuple(args), dict(kargs)),
                    fullerror=self.debug,
                    statics=statics,
                    session=session,
                    exit_callback=self._request_exit,
                )
                if not isinstance(renderer.tag, self.tag_class):
                    # htag caught an exception in the app's init and put its text, unescaped
                    # (it may quote what a URL gave), in the page.
                    shown = "".join(str(child) for child in renderer.tag.childs)
                    renderer.tag.clear(html.escape(shown) if self.debug else INIT_FAILED)
                page_html = str(renderer)
            self._save_session()  # what init changed in place
            renderer.sendactions = self._pusher(renderer)
            self.renderer, self.instance = renderer, instance
        self._schedule_idle_check()
        return {"html": page_html, "instance": instance}

    async def _interact(
        self, message: dict[str, Any], writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
        self._note_activity(engaged=True)
        if not self.rate_limit.allow():
            return {"limited": True}
        subscriber = self._subscribers.get(writer)
        page = message.get("page") if subscriber is None else subscriber.page
        sealed = message.get("sealed")
        if sealed is None:
            if self.parano:
                logger.warning("refused a plaintext interaction (parano mode)")
                return {"actions": {"err": PLAINTEXT_REFUSED}}
            return {"actions": await self._apply(message["payload"], message, writer, page)}
        from .parano import CounterError, SealError

        cipher = self._keys.get(page) if self._keys and isinstance(page, str) else None
        if cipher is None:
            # Forgotten past the limit: new keys would need a proof nothing can check now,
            # so the page loads again (a new page, its own keys).
            return {"reload": True}
        answered = cipher.answer_again(sealed)
        if answered is not None:
            return {"sealed": answered}
        try:
            payload = parse_interaction(cipher.open(sealed))
        except CounterError as exc:
            # A replay, or a page that sealed a message the server never opened (refused
            # by a limit on the way): either way, only new keys can go on.
            logger.warning("refused a sealed interaction: %s", exc)
            return {"rekey": True}
        except (SealError, InvalidInteraction) as exc:
            logger.warning("refused a sealed interaction: %s", exc)
            return {"actions": {"err": REFUSED}}
        actions = await self._apply(payload, message, writer, page)
        return {"sealed": cipher.seal_answer(sealed, json.dumps(actions).encode())}

    async def _apply(
        self,
        payload: dict[str, Any],
        message: dict[str, Any],
        writer: asyncio.StreamWriter,
        page: Any,
    ) -> dict[str, Any]:
        """Run one interaction; the actions that answer it."""
        async with self._lock:
            if self.renderer is None:
                return {"reload": True}
            # HTTP requests name their page's instance; a WebSocket page is known by its
            # connection. A page showing an older instance gets the live one instead.
            subscriber = self._subscribers.get(writer)
            shown = message.get("instance", subscriber.instance if subscriber else None)
            seq = payload.get("seq")
            if shown not in (None, self.instance):
                for other in self._subscribers.values():  # its socket, or its event stream
                    if other is subscriber or (page is not None and other.page == page):
                        other.instance = self.instance
                return _numbered(self._live_page(), seq)
            answered = self._answer_of(page, seq)
            if answered is not None:
                return answered
            refused = guard.refusal(
                running_generators(self.renderer), payload.get("id"), payload.get("method")
            )
            if refused:
                logger.warning("refused an interaction: %s", refused)
                return _numbered({"err": REFUSED}, seq)
            if self.session is not None:
                self.session.refresh()  # see what request.session wrote meanwhile
            with self._deadline():
                actions = await self.renderer.interact(
                    payload.get("id"),
                    payload.get("method"),
                    payload.get("args") or [],
                    payload.get("kargs") or {},
                    payload.get("event"),
                )
            unsaved = self._save_session()  # what the interaction changed in place
            if unsaved:
                actions["err"] = unsaved
            if "err" in actions and not self.debug:
                actions["err"] = GENERIC_ERROR
            self._remember(page, seq, actions)
        self._broadcast(actions, exclude=writer, page=page)
        return _numbered(actions, seq)

    def _answer_of(self, page: Any, seq: Any) -> dict[str, Any] | None:
        """The answer to an interaction this page sent before; None for a new one."""
        if not isinstance(page, str) or type(seq) is not int:
            return None  # not numbered: a client other than htagweb's
        last = self._answers.get(page)
        if last is None or seq > last[0]:
            return None
        return _numbered(dict(last[1]), seq) if seq == last[0] else _numbered({}, seq)

    def _remember(self, page: Any, seq: Any, actions: dict[str, Any]) -> None:
        if not isinstance(page, str) or type(seq) is not int:
            return
        self._answers[page] = (seq, actions)
        self._answers.move_to_end(page)
        while len(self._answers) > PAGES_REMEMBERED:
            self._answers.popitem(last=False)

    async def _attach(
        self, message: dict[str, Any], writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
        self._note_activity(engaged=True)
        page = message.get("page")
        page = page if isinstance(page, str) else None
        reply: dict[str, Any] = {"ok": True}
        if "hello" in message:  # a parano WebSocket: its keys come first
            reply = self._handshake(page, message["hello"])
            if "hello" not in reply:
                return reply  # no keys: the page's own connection keeps its keys and pushes
        elif self.parano and not self._stream_proven(page, message.get("proof")):
            # Neither a key exchange nor an event stream proven with the page's keys: opened
            # in the page's name by someone who read its id, it must not take its pushes.
            return {"reload": True}
        subscriber = _Subscriber(str(message.get("instance")), page)
        async with self._lock:  # a page load under way replaces the renderer
            if self.renderer is None:
                return {"reload": True}
            if page is not None:
                # A page has one live connection for pushes: an older one of the same page
                # (half-open after a network change) gets none from now on, lest sealed
                # pushes use up the new keys' counters. Only now, the new one accepted.
                for other, known in list(self._subscribers.items()):
                    if known.page == page:
                        del self._subscribers[other]
            # Registered only now, with no wait before the answer is written: no push can
            # reach the page before this answer (and its keys, in parano mode).
            self._subscribers[writer] = subscriber
            stale = message.get("instance") != self.instance
            if stale or message.get("refresh"):
                # A page that reconnects may have missed pushes: it gets the current tree
                # (whose scripts run again, as after a page load).
                subscriber.instance = self.instance
                live_page: dict[str, Any] | None = self._live_page()
            else:
                live_page = None
        if live_page is not None:
            cipher = self._cipher_of(subscriber)
            if cipher is not None:
                reply["sealed"] = cipher.seal_push(json.dumps(live_page).encode())
            elif not self.parano:
                reply["actions"] = live_page
        return reply

    def _handshake(self, page: Any, hello: Any) -> dict[str, Any]:
        """Parano mode: agree on keys with a page. A page that has keys gets new ones only
        by proving it holds them (see htagweb.app.parano): anyone else is told to load a page
        of their own, and the page keeps its keys and its connection."""
        from .parano import KeysLost, KeysRefused, PageKeys, SealError

        if not isinstance(page, str) or not isinstance(hello, str):
            return {"error": "a handshake names its page and carries a public key"}
        if self._keys is None:
            self._keys = PageKeys(PAGES_REMEMBERED)
        connected = {s.page for s in self._subscribers.values()}
        try:
            cipher = self._keys.agree(page, hello, connected.__contains__)
        except KeysLost:
            return {"reload": True}  # forgotten past the limit: a page load gets new keys
        except KeysRefused as exc:
            logger.warning("refused a key exchange for a page that has keys: %s", exc)
            return {"reload": True}
        except SealError as exc:
            logger.warning("refused a handshake: %s", exc)
            return {"error": "bad handshake"}
        return {"hello": cipher.hello}

    def _stream_proven(self, page: str | None, proof: Any) -> bool:
        """Parano mode: whether an event stream proves that the page holding the keys opened
        it (see htagweb.app.parano). A socket without a key exchange carries no proof."""
        from .parano import KeysLost, KeysRefused

        if self._keys is None:
            return False
        try:
            self._keys.open_stream(page, proof)
        except KeysLost:
            return False  # forgotten past the limit: a page load gets new keys
        except KeysRefused as exc:
            logger.warning("refused a push connection for a parano page: %s", exc)
            return False
        return True

    def _save_session(self) -> str | None:
        """Save what the app changed in its session in place; why it could not, if so."""
        if self.session is None:
            return None
        try:
            self.session.save_changes()
        except (TypeError, SessionError) as exc:
            logger.error("the app's session could not be saved: %s", exc)
            return f"The session could not be saved: {exc}"
        return None

    def _cipher_of(self, subscriber: _Subscriber) -> PageCipher | None:
        return self._keys.get(subscriber.page) if self._keys else None

    def _session(self, described: dict[str, Any]) -> AppSession:
        """This process's view of its user's session (one store connection per process)."""
        if self.session is None or self.session.session_id != described["id"]:
            global _store
            if _store is None:
                _store = open_store(described["store"])
            self.session = AppSession(_store, described["id"])
        return self.session

    def _live_page(self) -> dict[str, Any]:
        """Actions that replace the browser's page by the live instance's."""
        assert self.renderer is not None
        root = self.renderer.tag
        with self._deadline():
            body = str(root)
            scripts = "\n".join(page_scripts(root))
        return {"update": {"0": body}, "post": scripts, "instance": self.instance}

    # -- push (tag.update) ---------------------------------------------------------

    def _live_pages(self) -> list[asyncio.StreamWriter]:
        return [w for w, s in self._subscribers.items() if s.instance == self.instance]

    def _pusher(self, renderer: HRenderer) -> Callable[[dict[str, Any]], Awaitable[bool]]:
        """tag.update() for the tags of `renderer`: sent to the pages showing it."""

        async def push(actions: dict[str, Any]) -> bool:
            self._save_session()  # what the code pushing changed in place
            pages = self._live_pages() if renderer is self.renderer else []
            if not pages:  # no page, or an instance replaced by a page load (its task lives on)
                return False
            self._send(pages, actions)
            return True

        return push

    def _broadcast(
        self, actions: dict[str, Any], exclude: asyncio.StreamWriter, page: Any
    ) -> None:
        """Keep other tabs showing this instance in step (without driving generators).

        The page that interacted gets the answer itself, over HTTP or its WebSocket:
        its event stream, if it has one, is left out.
        """
        others = [
            w
            for w in self._live_pages()
            if w is not exclude and (page is None or self._subscribers[w].page != page)
        ]
        shared = {k: v for k, v in actions.items() if k in ("update", "stream", "post")}
        if others and shared:
            self._send(others, shared)

    def _send(self, writers: list[asyncio.StreamWriter], actions: dict[str, Any]) -> None:
        """Push `actions` to pages: sealed for each page that agreed on keys."""
        plain = None
        for writer in writers:
            cipher = self._cipher_of(self._subscribers[writer])
            if cipher is not None:
                sealed = cipher.seal_push(json.dumps(actions).encode())
                writer.write(encode_frame({"sealed": sealed}))
            elif not self.parano:
                plain = plain or encode_frame({"actions": actions})
                writer.write(plain)

    # -- lifetime ------------------------------------------------------------------

    @contextlib.contextmanager
    def _deadline(self) -> Iterator[None]:
        seconds = self.timeout_interaction
        if seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            if seconds > 0:
                signal.setitimer(signal.ITIMER_REAL, 0)

    def _request_exit(self) -> None:
        """tag.exit(): end the process once the current answer is sent."""
        self._exit_requested = True
        if not self._lock.locked():
            self._done.set()

    def _note_activity(self, engaged: bool = False) -> None:
        """Restart the inactivity clock and keep the supervisor's use clock (at most 1/s,
        but at once when a page engages for the first time: it is then not evicted first)."""
        now = time.monotonic()
        self._last_activity = now
        first_engagement = engaged and not self._engaged_at
        if engaged:
            self._engaged_at = time.time()
        if first_engagement or now - self._last_touch > TOUCH_INTERVAL:
            self._last_touch = now
            with contextlib.suppress(OSError):
                mark_used(self.socket_path, self._engaged_at)

    def _schedule_idle_check(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.timeout_inactivity <= 0:
            return
        remaining = self._last_activity + self.timeout_inactivity - time.monotonic()
        if remaining <= 0 and not self._lock.locked():
            logger.info("app process %s idle for %ss: ending", os.getpid(), self.timeout_inactivity)
            self._done.set()
            return
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(max(remaining, 0.05), self._schedule_idle_check)


def _numbered(actions: dict[str, Any], seq: Any) -> dict[str, Any]:
    """The answer to interaction `seq`: the page drops it from the ones it may resend."""
    if seq is not None:
        actions["seq"] = seq
    return actions


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


def run(tag_class: type[Tag], listener: socket.socket, socket_path: str) -> int:
    """Serve until the app ends; returns the process exit code."""
    # The default action of SIGALRM ends the process: that is the interaction deadline.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    listener.setblocking(False)
    try:
        asyncio.run(AppProcess(tag_class, socket_path).serve(listener))
    except Exception:
        logger.exception("app process %s failed", os.getpid())
        return 1
    return 0
