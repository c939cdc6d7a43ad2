"""Every message between htagweb's processes, typed, in one place.

Three conversations, each over framed JSON (htagweb.wire.ipc):

    web worker  -> supervisor    SupervisorRequest,  answered by a SupervisorReply
    web worker  -> app process   AppRequest,         answered by an AppReply; pushes
                                                     (tag.update()) come as AppReply too
    supervisor  -> template      TemplateRequest;    TemplateReport comes back

The rule: a request names what it asks in "op"; everything that comes back (answers,
pushes, reports) names what it is in "kind". A request that expects an answer carries a
"rid" the answer repeats; notices ("loaded", "used") and pushes carry none.

These are TypedDicts: plain dicts on the wire and in memory (nothing is converted per
message), checked by mypy where they are built and read. A peer is still only trusted as
far as the process it runs in: app processes are the user's code, so what they answer
is checked where it is used (see htagweb.web.replies).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:  # annotations only: nothing here is evaluated at run time
    from typing_extensions import NotRequired

# -- shared pieces -----------------------------------------------------------------------


class AppRefJson(TypedDict):
    """An app as workers, supervisor and templates name it (see htagweb.appref.AppRef)."""

    fqn: str
    module: str
    qualname: str
    file: str | None
    version: int


class ClientLimits(TypedDict):
    """A page load's client address and the per-address limits it is under."""

    ip: str
    new_session: bool
    max_processes: int  # 0: no limit
    new_sessions_per_minute: float  # 0: no limit


class SupervisorSettings(TypedDict):
    """What a supervisor is started with (a JSON argument, once)."""

    start_method: str
    max_processes: int
    memory_reserve: NotRequired[int]  # bytes kept free: past them a new process replaces one
    merge_memory: NotRequired[bool]  # app processes' identical pages merged (Linux KSM)
    spares_per_app: NotRequired[int]
    server_dir: str
    master_pid: int
    ready_fd: int
    sys_path: list[str]
    cwd: str
    log_level: int


class AppOptions(TypedDict):
    """How an app process serves its app: sent with each page load, because handle() may
    give each route its own; interactions carry none."""

    debug: bool
    parano: bool
    timeout_interaction: float
    timeout_inactivity: float
    interactions_per_second: float


class PageSettings(TypedDict):
    """What the client script of a page is told (its data-* attributes)."""

    client_src: str
    parano_src: str  # loaded before client_src by parano pages only
    endpoint: str
    mode: Literal["ws", "http"]
    heartbeat: float
    boot: str


class SessionRef(TypedDict):
    """A user's session as an app process opens it: its id and how to reach the store."""

    id: str
    store: dict[str, Any]


# -- web worker -> supervisor ------------------------------------------------------------


class EnsureRequest(TypedDict):
    """A live process for this (session, app), started if needed -> Started."""

    op: Literal["ensure"]
    rid: NotRequired[int]
    app: AppRefJson
    key: str  # runtime.app_key(session id, fqn)
    owner: str  # runtime.session_owner(session id)
    stale: bool  # the process at the last answer's socket did not answer: start another
    client: ClientLimits | None


class LoadedNotice(TypedDict):
    """The page load of `key` is served: its process may now be evicted."""

    op: Literal["loaded"]
    key: str


class UsedNotice(TypedDict):
    """A page used the process of `key`: an interaction or a connection (engaged), or a
    page load. Sent at most once a second per process by each worker."""

    op: Literal["used"]
    key: str
    engaged: bool


class PrepareRequest(TypedDict):
    """Start the app's template and spares before its first user -> Ok."""

    op: Literal["prepare"]
    rid: NotRequired[int]
    app: AppRefJson


class KillRequest(TypedDict):
    """End the process of `key` (an interaction ran past its deadline) -> Ok."""

    op: Literal["kill"]
    rid: NotRequired[int]
    key: str


class EndSessionRequest(TypedDict):
    """End every process of the session `owner` names (its cookie was rotated) -> Ok."""

    op: Literal["end_session"]
    rid: NotRequired[int]
    owner: str


class StatusRequest(TypedDict):
    """What runs, for tests, benchmarks and operators -> Status."""

    op: Literal["status"]
    rid: NotRequired[int]


SupervisorCall = EnsureRequest | PrepareRequest | KillRequest | EndSessionRequest | StatusRequest
SupervisorNotice = LoadedNotice | UsedNotice
SupervisorRequest = SupervisorCall | SupervisorNotice


class Started(TypedDict):
    kind: Literal["started"]
    rid: NotRequired[int]
    socket: str
    pid: int


class Ok(TypedDict):
    kind: Literal["ok"]
    rid: NotRequired[int]


class Limited(TypedDict):
    """A per-address limit refused the page load; `reason` is safe to show."""

    kind: Literal["limited"]
    rid: NotRequired[int]
    reason: str


class Failed(TypedDict):
    """The request could not be carried out; `error` is for the log (and debug pages)."""

    kind: Literal["error"]
    rid: NotRequired[int]
    error: str


class ProcessStatus(TypedDict):
    key: str
    pid: int
    fqn: str


class Status(TypedDict):
    kind: Literal["status"]
    rid: NotRequired[int]
    pid: int
    processes: list[ProcessStatus]
    templates: list[int]
    spares: list[int]
    max_processes: int
    memory_reserve: int


SupervisorReply = Started | Ok | Limited | Failed | Status


# -- web worker -> app process -----------------------------------------------------------


class RenderRequest(TypedDict):
    """A fresh instance of the app for a page load -> PageRendered."""

    op: Literal["render"]
    rid: NotRequired[int]
    init: list[Any]  # [args, kwargs] from the URL, for the app's init
    page: PageSettings
    session: SessionRef
    options: AppOptions


class InteractRequest(TypedDict):
    """One htag interaction -> Actions or Sealed (or Reload, Rekey, RateLimited, Failed).

    `payload`: a checked plaintext interaction (wire.protocol); `sealed`: parano mode's
    sealed one, opened by the app process. `instance` and `page`: what an HTTP request
    says it shows; a WebSocket page is known by its connection instead.
    """

    op: Literal["interact"]
    rid: NotRequired[int]
    instance: NotRequired[str | None]
    page: NotRequired[str | None]
    payload: NotRequired[dict[str, Any]]
    sealed: NotRequired[dict[str, Any]]


class AttachRequest(TypedDict):
    """This connection now receives the page's pushes -> Attached (or Reload, Failed).

    Parano mode: a WebSocket carries the page's key exchange (`hello`), an event stream
    its proof (`proof`) that the page holding the keys opened it.
    """

    op: Literal["attach"]
    rid: NotRequired[int]
    instance: str | None
    page: str | None
    refresh: bool  # the page reconnected: it gets the current tree
    hello: NotRequired[str]
    proof: NotRequired[str | None]


class HandshakeRequest(TypedDict):
    """Parano mode: keys for an HTTP page -> Keys (or Reload, Failed)."""

    op: Literal["handshake"]
    rid: NotRequired[int]
    page: str | None
    hello: str


AppRequest = RenderRequest | InteractRequest | AttachRequest | HandshakeRequest


class _AppAnswer(TypedDict):
    rid: NotRequired[int]
    timeout_interaction: NotRequired[float]  # the deadline the process applies, told back


class PageRendered(_AppAnswer):
    kind: Literal["page"]
    html: str
    instance: str


class Actions(_AppAnswer):
    """htag's actions (update, post, stream, err, ...) for the page: an answer or a push."""

    kind: Literal["actions"]
    actions: dict[str, Any]


class Sealed(_AppAnswer):
    """Parano mode: actions sealed for the page (an answer or a push)."""

    kind: Literal["sealed"]
    sealed: dict[str, Any]


class Attached(_AppAnswer):
    """The connection is attached; with the current tree when the page was behind
    (`actions`, or `sealed` in parano mode) and the process's key (`hello`) after a key
    exchange."""

    kind: Literal["attached"]
    hello: NotRequired[str]
    actions: NotRequired[dict[str, Any]]
    sealed: NotRequired[dict[str, Any]]


class Keys(_AppAnswer):
    """Parano mode: the app process's public key for the page."""

    kind: Literal["keys"]
    hello: str


class Reload(_AppAnswer):
    """No live instance for this page (or its keys are forgotten): load the page again."""

    kind: Literal["reload"]


class Rekey(_AppAnswer):
    """Parano mode: the page must agree on new keys before it goes on."""

    kind: Literal["rekey"]


class RateLimited(_AppAnswer):
    """Too many interactions: the page is slowed down."""

    kind: Literal["limited"]


class AppFailed(_AppAnswer):
    """The process could not answer (logged there)."""

    kind: Literal["error"]
    error: str


AppReply = (
    PageRendered | Actions | Sealed | Attached | Keys | Reload | Rekey | RateLimited | AppFailed
)


# -- supervisor -> template --------------------------------------------------------------


class ForkRequest(TypedDict):
    """Fork an app process listening at `socket` -> Forked or ForkFailed."""

    op: Literal["start"]
    rid: int
    socket: str


class KillChild(TypedDict):
    op: Literal["kill"]
    pid: int


class Quit(TypedDict):
    """End every child, then the template."""

    op: Literal["quit"]


TemplateRequest = ForkRequest | KillChild | Quit


class TemplateReady(TypedDict):
    kind: Literal["ready"]
    pid: int


class TemplateFailed(TypedDict):
    """The app could not be imported; `error` is its exception, on one line."""

    kind: Literal["failed"]
    error: str


class Forked(TypedDict):
    kind: Literal["forked"]
    rid: int
    pid: int


class ForkFailed(TypedDict):
    kind: Literal["fork_failed"]
    rid: int
    error: str


class ChildExited(TypedDict):
    kind: Literal["exited"]
    pid: int
    status: int


TemplateReport = TemplateReady | TemplateFailed | Forked | ForkFailed | ChildExited


class LaunchSpec(TypedDict):
    """What a template or a spawned app process is started with (a JSON argument)."""

    app: AppRefJson
    parent_pid: int
    sys_path: list[str]
    cwd: str
    log_level: int
    merge_memory: NotRequired[bool]  # ask the kernel to merge identical pages (KSM)
    channel_fd: NotRequired[int]  # a template: its socketpair to the supervisor
    listen_fd: NotRequired[int]  # a spawned app process: its bound listening socket
    ready_fd: NotRequired[int]  # a spawned app process: "ok", or why it could not start
