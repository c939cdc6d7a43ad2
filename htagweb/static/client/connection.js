// -- the connection ------------------------------------------------------------------
//
// The page has one connection to its app at a time: a WebSocket (websocket.js), which
// carries interactions, their answers and pushes; or an event stream (http.js), which
// carries pushes while interactions go by POST (see pump()). Its state is one of:
//
//   idle          the page has not started
//   connecting    a WebSocket or an event stream (link.via) is being opened
//   open          it is open
//   backing-off   it was lost, or did not open: a timer opens one again
//   gone          the app behind the page ended: nothing is opened again, nothing waits
//                 for an answer, and the next interaction loads the page again
//
// The state changes in enter() only, called by link's methods, and only by the moves
// below: a handler or timer of a connection given up, firing late, changes nothing.

const SOCKET_TRIES_BEFORE_FALLBACK = 3; // once a WebSocket has worked on this page

const MOVES = {
  idle: ["connecting", "gone"], // gone: a parano page that cannot seal anything
  // connecting again: a WebSocket refused (by a proxy, say) gives way to an event
  // stream at once, without backing off
  connecting: ["open", "connecting", "backing-off", "gone"],
  // connecting again: parano over HTTP, new keys need an event stream proving them
  open: ["connecting", "backing-off", "gone"],
  "backing-off": ["connecting", "gone"],
  gone: [], // for good: a new page load starts a new app
};

const link = {
  state: "idle",
  via: settings.mode, // "ws" or "http": the connection being opened, or open
  mode: settings.mode, // interactions go on the WebSocket ("ws") or by POST ("http")
  channel: null, // the WebSocket or EventSource being opened, or open
  line: null, // the codec's side of that WebSocket
  failures: 0, // attempts that failed since a connection last opened
  everOpened: false,
  pingSentAt: 0, // a ping not answered yet (0: none)
  heardAt: 0, // when the event stream last spoke (the server pings it every heartbeat)

  enter(state) {
    if (!MOVES[this.state].includes(state)) return false;
    this.state = state;
    return true;
  },

  connect(via) {
    if (!this.enter("connecting")) return;
    this.via = via;
    if (via === "ws") openSocket();
    else openEvents();
  },

  opened(channel) {
    if (channel !== this.channel || !this.enter("open")) return false;
    this.everOpened = true; // from now on, connections ask for the current tree
    this.failures = 0;
    show();
    if (this.via === "http" && this.mode === "ws") {
      this.mode = "http"; // HTTP works where the WebSocket did not: HTTP from now on
      pump(); // what waited for the WebSocket goes now
    }
    return true;
  },

  lost(appEnded) {
    // The current connection closed, failed, fell silent, or could not get keys.
    const wasOpen = this.state === "open";
    this.channel = this.line = null;
    if (appEnded) {
      this.end();
    } else if (this.via === "ws") {
      // A socket that never opened on this page points at a proxy refusing WebSockets;
      // one that did, at a server that is away, unless it keeps failing.
      const refused = !this.everOpened || this.failures >= SOCKET_TRIES_BEFORE_FALLBACK;
      if (!wasOpen && refused) this.connect("http"); // at once: HTTP may work
      else this.backOff("ws");
    } else if (!wasOpen && this.mode === "ws") {
      this.backOff("ws"); // HTTP fails as well: the server is away
    } else {
      this.backOff("http");
    }
  },

  backOff(via) {
    if (!this.enter("backing-off")) return;
    this.via = via;
    const wait = backoff(this.failures);
    this.failures += 1;
    watchBoot(); // development: a server that comes back with new code reloads the page
    show();
    setTimeout(() => this.connect(via), wait);
  },

  reopen() {
    // Parano over HTTP: the app asked for new keys, and its pushes come sealed with them
    // on an event stream that proves them. No event stream: none to replace.
    if (this.via !== "http" || !this.channel) return;
    const old = this.channel;
    this.channel = null;
    old.close();
    this.connect("http");
  },

  end() {
    // The app behind this page ended: nothing waits for an answer or a connection now.
    if (!this.enter("gone")) return;
    while (outbox.length) outbox.shift().done();
    watchBusy();
    show();
  },

  canSend() {
    // A WebSocket that is open, and in parano mode has its keys.
    return this.line !== null && this.channel.readyState === WebSocket.OPEN && this.line.ready();
  },
};
