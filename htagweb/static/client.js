// htagweb browser client.
//
// htag's page defines start(), action() and jevent(); the page's events call
// interact(payload). This file provides interact(): it carries each payload to the
// server and applies the actions that come back, in order.
//
// Two ways to the server: a WebSocket (data-mode="ws"), or HTTP POSTs with a
// Server-Sent Events stream for tag.update() pushes (data-mode="http", and the fallback
// when no WebSocket can be opened, behind a proxy that refuses upgrades).
//
// Every interaction is numbered (seq) and stays in the outbox until its answer comes.
// After a lost connection the outbox is sent again: the server answers an interaction
// it already applied without applying it twice, so a click is applied exactly once.
//
// The page's actions are only ever those the server's htag renderer sent (parsed as
// JSON, never evaluated here); htag's action() runs their scripts.
//
// In parano mode (data-parano="1") every interaction, answer and push is sealed: that is
// parano.js, which parano pages load just before this file. Messages go out and come in
// through a codec: the plain one here, or parano.js's sealed one.
//
// Settings come from this file's own <script> tag: data-endpoint, data-mode,
// data-instance (the app instance the page shows), data-heartbeat (seconds, 0: none),
// data-parano, data-boot (development: the id of the server process; when a new one
// answers, the page reloads to show the new code).
(function () {
  "use strict";

  // Shared with the server (tests/test_client_constants.py checks them against Python).
  const CLOSE_APP_GONE = 4404; // a WebSocket's close code: the app behind the page ended
  const CLOSE_TOO_BIG = 1009; // a WebSocket's close code: a message over the server's limit
  const SOCKET_PING = "ping"; // the heartbeat on a WebSocket, which the server answers
  const SOCKET_PONG = "pong";
  const STREAM_PING = "ping"; // an event stream's event: a sign of life
  const STREAM_ENDED = "ended"; // an event stream's event: the app ended
  const PARAM_INSTANCE = "i"; // query parameters: the app instance the page shows,
  const PARAM_PAGE = "p"; // the page's own random id,
  const PARAM_REFRESH = "r"; // a reconnection, which gets the current tree,
  const PARAM_SEALED = "s"; // parano: a WebSocket's key exchange comes first,
  const PARAM_STREAM_PROOF = "e"; // parano: an event stream's proof

  const BUSY_AFTER_MS = 300;
  const BACKOFF_FIRST_MS = 250;
  const BACKOFF_CAP_MS = 10000;
  const SOCKET_TRIES_BEFORE_FALLBACK = 3; // once a WebSocket has worked on this page
  const SILENCE_GRACE_MS = 5000; // on top of the heartbeat before a connection counts as dead
  const RELOAD_AT_MOST_EVERY_MS = 10000;
  const BOOT_CHECK_EVERY_MS = 200;

  const settings = document.currentScript.dataset;
  const endpoint = settings.endpoint;
  const heartbeatMs = Number(settings.heartbeat || 0) * 1000;
  const pageId = randomId();

  let instance = settings.instance; // the page now shows the live one (see apply())
  const outbox = []; // {seq, text, done}: not answered yet, in order
  let lastSeq = 0;

  function randomId() {
    const bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function urlOf(scheme, reconnecting, streamProof) {
    const url = new URL(endpoint, window.location.href);
    if (scheme === "ws") url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set(PARAM_INSTANCE, instance);
    url.searchParams.set(PARAM_PAGE, pageId);
    if (reconnecting) url.searchParams.set(PARAM_REFRESH, "1");
    if (codec.sealed && scheme === "ws") url.searchParams.set(PARAM_SEALED, "1");
    if (streamProof) url.searchParams.set(PARAM_STREAM_PROOF, streamProof);
    return url.toString();
  }

  function backoff(failures) {
    // The wait after `failures` failed attempts, with jitter: pages do not return in step.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** failures);
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  // -- the connection ------------------------------------------------------------------
  //
  // The page has one connection to its app at a time: a WebSocket, which carries
  // interactions, their answers and pushes; or an event stream, which carries pushes
  // while interactions go by POST (see pump()). Its state is one of:
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

  // -- what the user sees ------------------------------------------------------------
  // Classes on <body> that apps may style: htagweb-busy (an interaction takes longer
  // than BUSY_AFTER_MS) and htagweb-reconnecting. An update of the whole page replaces
  // <body>, so they are set again after each one; the indicator lives outside <body>.

  const look = { busy: false, busyTimer: null, indicator: null };
  const posts = { running: false, failures: 0 }; // failures: since a POST last got an answer

  const DEFAULT_STYLE = `
body.htagweb-busy, body.htagweb-busy * { cursor: progress !important; }
body.htagweb-busy::after {
  content: ""; position: fixed; top: 0; left: 0; height: 3px; width: 30%;
  z-index: 2147483647; background: #4a90d9; pointer-events: none;
  animation: htagweb-busy 1s ease-in-out infinite alternate;
}
@keyframes htagweb-busy { from { left: 0; } to { left: 70%; } }
#htagweb-reconnecting {
  position: fixed; right: 12px; bottom: 12px; z-index: 2147483647;
  padding: 4px 10px; border-radius: 12px; font: 13px system-ui, sans-serif;
  background: rgba(40, 40, 40, 0.85); color: #fff; pointer-events: none;
}`;

  function createIndicator() {
    const style = document.createElement("style");
    style.textContent = DEFAULT_STYLE;
    document.head.prepend(style); // first, so the app's own rules win
    const indicator = document.createElement("div");
    indicator.id = "htagweb-reconnecting";
    indicator.textContent = "Reconnecting…";
    indicator.hidden = true;
    document.documentElement.appendChild(indicator);
    look.indicator = indicator;
  }

  function show() {
    const failing = link.failures > 0 || posts.failures > 0;
    const reconnecting = failing && link.state !== "gone";
    if (document.body) {
      document.body.classList.toggle("htagweb-busy", look.busy);
      document.body.classList.toggle("htagweb-reconnecting", reconnecting);
    }
    if (look.indicator) look.indicator.hidden = !reconnecting;
  }

  function watchBusy() {
    if (outbox.length) {
      if (!look.busy && look.busyTimer === null) {
        look.busyTimer = setTimeout(() => {
          look.busyTimer = null;
          look.busy = outbox.length > 0;
          show();
        }, BUSY_AFTER_MS);
      }
    } else {
      clearTimeout(look.busyTimer);
      look.busyTimer = null;
      if (look.busy) {
        look.busy = false;
        show();
      }
    }
  }

  // -- answers, pushes -----------------------------------------------------------------

  function reloadOnce() {
    // The app process behind this page is gone: a page load starts a fresh one. Not in a
    // loop, though: with cookies blocked, every load would meet a gone process again.
    link.end();
    let last = 0;
    try {
      last = Number(window.sessionStorage.getItem("htagweb-reload")) || 0;
    } catch (e) {
      // no storage: reload anyway, once per page
    }
    if (Date.now() - last > RELOAD_AT_MOST_EVERY_MS) {
      try {
        window.sessionStorage.setItem("htagweb-reload", String(Date.now()));
      } catch (e) {
        // as above
      }
      window.location.reload();
    } else {
      apply({ err: "The app is gone. Reload the page to start it again." });
    }
  }

  function cannotSeal(text) {
    link.end(); // no keys, no interactions: plaintext would be refused anyway
    apply({ err: text });
  }

  function parsed(text) {
    // A message from the server is a JSON object; null for anything else.
    try {
      const value = JSON.parse(text);
      return value && typeof value === "object" ? value : null;
    } catch (e) {
      return null;
    }
  }

  function receive(message) {
    if (typeof message.seq === "number") {
      while (outbox.length && outbox[0].seq <= message.seq) outbox.shift().done();
      watchBusy();
    }
    apply(message);
  }

  function apply(actions) {
    if (actions.reload) {
      if (link.state !== "gone") reloadOnce();
      return;
    }
    if (actions.instance) instance = actions.instance; // the page now shows the live one
    try {
      window.action(actions);
    } catch (e) {
      // htag's action() reports errors itself, then throws them
    } finally {
      show();
    }
  }

  window.interact = function (payload) {
    if (link.state === "gone") {
      reloadOnce();
      return Promise.resolve();
    }
    lastSeq += 1;
    const seq = lastSeq;
    return new Promise((resolve) => {
      const item = { seq, text: JSON.stringify(Object.assign({}, payload, { seq })), done: resolve };
      outbox.push(item);
      watchBusy();
      if (link.mode === "http") pump();
      else if (link.canSend()) link.line.send(item);
      // else it is sent when the socket opens again
    });
  };

  // -- WebSocket -----------------------------------------------------------------------

  function openSocket() {
    const ws = new WebSocket(urlOf("ws", link.everOpened));
    const line = codec.line(ws);
    link.channel = ws;
    link.line = line;
    ws.onopen = function () {
      if (!link.opened(ws)) return;
      link.pingSentAt = 0;
      line.opened(); // the outbox goes (parano: keys first)
    };
    ws.onmessage = function (event) {
      link.pingSentAt = 0; // anything heard answers the ping
      if (event.data === SOCKET_PONG) return;
      line.received(parsed(event.data) || {}); // {}: dropped (parano), or ignored
    };
    ws.onclose = function (event) {
      if (ws !== link.channel) return;
      if (event.code === CLOSE_TOO_BIG && outbox.length) {
        outbox.shift().done(); // too big for the server: sending it again would not help
        watchBusy();
        apply({ err: "This interaction is too large for the server." });
      }
      link.lost(event.code === CLOSE_APP_GONE); // or the server sent "reload" first
    };
  }

  function beat() {
    // Timers of hidden tabs may run once a minute: only a ping left unanswered for a whole
    // period means a dead connection.
    const now = Date.now();
    const ws = link.via === "ws" ? link.channel : null;
    const events = link.via === "http" ? link.channel : null;
    if (ws && ws.readyState === WebSocket.OPEN) {
      if (link.pingSentAt && now - link.pingSentAt > Math.max(heartbeatMs, SILENCE_GRACE_MS)) {
        link.lost(false); // it died without a close: replace it
        ws.close();
      } else {
        if (!link.pingSentAt) link.pingSentAt = now;
        ws.send(SOCKET_PING);
      }
    } else if (events && link.heardAt && now - link.heardAt > 2 * heartbeatMs + SILENCE_GRACE_MS) {
      link.lost(false); // the server's pings stopped: the stream died silently
      events.close();
    }
  }

  // -- HTTP: POST for interactions, Server-Sent Events for pushes ----------------------

  async function openEvents() {
    const proof = await codec.streamProof(); // parano: keys first, and a proof of them
    if (link.state !== "connecting") return; // the app ended meanwhile
    if (proof === null) {
      link.lost(false); // no keys: as good as a stream that did not open
      return;
    }
    const source = new EventSource(urlOf("http", link.everOpened, proof));
    link.channel = source;
    source.onopen = function () {
      if (link.opened(source)) link.heardAt = Date.now();
    };
    source.addEventListener(STREAM_PING, function () {
      link.heardAt = Date.now();
    });
    source.onmessage = function (event) {
      link.heardAt = Date.now();
      const message = parsed(event.data);
      if (message) codec.pushed(message); // else: not from htagweb
    };
    source.addEventListener(STREAM_ENDED, function () {
      source.close();
      link.end(); // the app ended: no reconnection
    });
    source.onerror = function () {
      source.close(); // reconnections are ours, with backoff
      if (source === link.channel) link.lost(false);
    };
  }

  async function pump() {
    // One POST at a time, the first interaction of the outbox until it is answered.
    if (posts.running) return;
    posts.running = true;
    try {
      while (outbox.length && link.state !== "gone") {
        const item = outbox[0];
        const answer = await codec.post(item);
        if (answer === null) {
          // Not delivered, or no answer: sent again.
          const wait = backoff(posts.failures);
          posts.failures += 1;
          show();
          await new Promise((resolve) => setTimeout(resolve, wait));
          continue;
        }
        posts.failures = 0;
        if (answer.rekey) {
          link.reopen(); // parano: new keys for the next POST, and for the pushes
          continue;
        }
        await codec.answered(answer);
        if (outbox[0] === item) {
          outbox.shift().done(); // answers from a proxy, or a 429, carry no number
          watchBusy();
        }
      }
    } finally {
      posts.running = false;
    }
  }

  async function post(text) {
    try {
      const response = await fetch(urlOf("http", false), {
        method: "POST",
        body: text,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
      });
      const answer = parsed(await response.text());
      if (answer) return answer;
      // Not from htagweb: a proxy's error page while the server restarts, say.
      if (response.status >= 500) return null;
      return { err: "the server answered " + response.status };
    } catch (e) {
      return null; // the network failed
    }
  }

  // -- codecs ---------------------------------------------------------------------------
  // How interactions go out and messages come in. sealed: a WebSocket's first message is
  // a key exchange. line(ws): one WebSocket's side, {opened(), received(message), ready(),
  // send(item)}. streamProof(): resolves to what an event stream's URL proves ("": no
  // proof, null: no keys, no stream). pushed(message): a message of the event stream.
  // post(item): resolves to the answer to a POST, or null to send it again later.
  // answered(answer): takes that answer in.

  const plainCodec = {
    sealed: false,
    line(ws) {
      return {
        opened() {
          for (const item of outbox) ws.send(item.text);
        },
        received: receive,
        ready: () => true,
        send(item) {
          ws.send(item.text);
        },
      };
    },
    streamProof: () => Promise.resolve(""),
    pushed: receive,
    post: (item) => post(item.text),
    answered: (answer) => Promise.resolve(receive(answer)),
  };

  const PARANO_MISSING = "parano mode, but parano.js did not load: nothing can be sealed";
  const codec = codecOf(settings.parano === "1", window.htagwebParano);

  function codecOf(parano, paranoModule) {
    // parano.js ran before this file, if it loaded: what it defined is taken now, once.
    if (!parano) return plainCodec;
    if (!paranoModule) {
      console.error("htagweb: " + PARANO_MISSING);
      link.end(); // plaintext would be refused: the page says why once it has started
      return null;
    }
    return paranoModule.codec({
      post,
      receive,
      apply,
      cannotSeal,
      outbox,
      isCurrent: (ws) => link.channel === ws,
    });
  }

  // -- development: reload when the server was restarted with new code ---------------

  let watchingBoot = false;

  function watchBoot() {
    if (!settings.boot || watchingBoot) return;
    watchingBoot = true;
    const url = endpoint.slice(0, endpoint.lastIndexOf("/_/")) + "/_htagweb/boot";
    const check = async function () {
      try {
        const response = await fetch(url, { cache: "no-store" });
        if (response.ok) {
          if ((await response.text()) !== settings.boot) window.location.reload();
          else watchingBoot = false; // the same server: only the connection dropped
          return;
        }
      } catch (e) {
        // the server is restarting
      }
      setTimeout(check, BOOT_CHECK_EVERY_MS);
    };
    check();
  }

  window.addEventListener("DOMContentLoaded", function () {
    createIndicator();
    window.start();
    if (!codec) {
      cannotSeal(PARANO_MISSING);
      return;
    }
    link.connect(link.mode);
    if (heartbeatMs > 0) setInterval(beat, heartbeatMs);
  });
})();
