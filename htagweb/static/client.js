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
// Settings come from this file's own <script> tag: data-endpoint, data-mode,
// data-instance (the app instance the page shows), data-heartbeat (seconds, 0: none).
(function () {
  "use strict";

  const BUSY_AFTER_MS = 300;
  const BACKOFF_FIRST_MS = 250;
  const BACKOFF_CAP_MS = 10000;
  const SOCKET_TRIES_BEFORE_FALLBACK = 3; // once a WebSocket has worked on this page

  const settings = document.currentScript.dataset;
  const endpoint = settings.endpoint;
  const heartbeatMs = Number(settings.heartbeat || 0) * 1000;
  const pageId = randomId();

  let instance = settings.instance;
  let mode = settings.mode; // "ws" or "http"; "ws" becomes "http" when it cannot work
  let gone = false; // the app behind this page ended: the next interaction reloads
  let connectedOnce = false; // reconnections ask for the current tree (r=1)
  let retries = 0; // failed attempts since the last connection that worked

  const outbox = []; // {seq, text, done}: not answered yet, in order
  let lastSeq = 0;

  function randomId() {
    const bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function urlOf(scheme, reconnecting) {
    const url = new URL(endpoint, window.location.href);
    if (scheme === "ws") url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("i", instance);
    url.searchParams.set("p", pageId);
    if (reconnecting) url.searchParams.set("r", "1");
    return url.toString();
  }

  function backoff() {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** retries);
    retries += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2; // jitter: pages do not return in step
  }

  // -- what the user sees ------------------------------------------------------------
  // Classes on <body> that apps may style: htagweb-busy (an interaction takes longer
  // than BUSY_AFTER_MS) and htagweb-reconnecting. An update of the whole page replaces
  // <body>, so they are set again after each one; the indicator lives outside <body>.

  const look = { busy: false, reconnecting: false, streamDown: false, postFailing: false };
  let busyTimer = null;
  let indicator = null;

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
    indicator = document.createElement("div");
    indicator.id = "htagweb-reconnecting";
    indicator.textContent = "Reconnecting…";
    indicator.hidden = true;
    document.documentElement.appendChild(indicator);
  }

  function show() {
    look.reconnecting = look.streamDown || look.postFailing;
    if (document.body) {
      document.body.classList.toggle("htagweb-busy", look.busy);
      document.body.classList.toggle("htagweb-reconnecting", look.reconnecting);
    }
    if (indicator) indicator.hidden = !look.reconnecting;
  }

  function setStreamDown(down) {
    look.streamDown = down;
    show();
  }

  function watchBusy() {
    if (outbox.length) {
      if (!look.busy && busyTimer === null) {
        busyTimer = setTimeout(() => {
          busyTimer = null;
          look.busy = outbox.length > 0;
          show();
        }, BUSY_AFTER_MS);
      }
    } else {
      clearTimeout(busyTimer);
      busyTimer = null;
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
    gone = true;
    let last = 0;
    try {
      last = Number(window.sessionStorage.getItem("htagweb-reload")) || 0;
      window.sessionStorage.setItem("htagweb-reload", String(Date.now()));
    } catch (e) {
      // no storage: reload anyway, once per page
    }
    if (Date.now() - last > 10000) {
      window.location.reload();
    } else {
      apply({ err: "The app is gone. Reload the page to start it again." });
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
      if (!gone) reloadOnce();
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
    if (gone) {
      reloadOnce();
      return Promise.resolve();
    }
    lastSeq += 1;
    const seq = lastSeq;
    return new Promise((resolve) => {
      const item = { seq, text: JSON.stringify(Object.assign({}, payload, { seq })), done: resolve };
      outbox.push(item);
      watchBusy();
      if (mode === "http") {
        pump();
      } else if (socket && socket.readyState === WebSocket.OPEN) {
        socket.send(item.text);
      } // else it is sent when the socket opens again
    });
  };

  // -- WebSocket -----------------------------------------------------------------------

  let socket = null;
  let lastHeard = 0;

  function openSocket() {
    if (gone) return;
    const ws = new WebSocket(urlOf("ws", connectedOnce));
    let opened = false;
    socket = ws;
    ws.onopen = function () {
      opened = connectedOnce = true;
      retries = 0;
      lastHeard = Date.now();
      setStreamDown(false);
      for (const item of outbox) ws.send(item.text);
    };
    ws.onmessage = function (event) {
      lastHeard = Date.now();
      if (event.data !== "pong") receive(JSON.parse(event.data));
    };
    ws.onclose = function (event) {
      if (socket === ws) socketLost(event.code, opened);
    };
  }

  function socketLost(code, opened) {
    socket = null;
    if (code === 4404 || gone) {
      gone = true; // the app ended (or the server sent "reload" first)
      setStreamDown(false);
      return;
    }
    if (!opened && (!connectedOnce || retries >= SOCKET_TRIES_BEFORE_FALLBACK)) {
      openEvents(); // if HTTP works where the WebSocket does not, use HTTP from now on
    } else {
      retryLater(openSocket);
    }
  }

  function retryLater(connect) {
    setStreamDown(true);
    setTimeout(connect, backoff());
  }

  function beat() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - lastHeard > 2 * heartbeatMs + 5000) {
      // Nothing heard, not even a pong: the connection died without a close.
      const dead = socket;
      socketLost(1006, true);
      dead.close();
    } else {
      socket.send("ping");
    }
  }

  // -- HTTP: POST for interactions, Server-Sent Events for pushes ----------------------

  let events = null;
  let posting = false;

  function openEvents() {
    if (gone) return;
    const source = new EventSource(urlOf("http", connectedOnce));
    let opened = false;
    events = source;
    source.onopen = function () {
      opened = connectedOnce = true;
      retries = 0;
      setStreamDown(false);
      if (mode !== "http") {
        mode = "http";
        pump(); // what waited for the WebSocket goes now
      }
    };
    source.onmessage = function (event) {
      receive(JSON.parse(event.data));
    };
    source.addEventListener("ended", function () {
      gone = true; // the app ended: no reconnection
      source.close();
    });
    source.onerror = function () {
      source.close(); // reconnections are ours, with backoff
      if (events !== source || gone) return;
      events = null;
      if (!opened && mode === "ws") {
        retryLater(openSocket); // HTTP fails as well: the server is away
      } else {
        retryLater(openEvents);
      }
    };
  }

  async function pump() {
    if (posting) return;
    posting = true;
    try {
      while (outbox.length && !gone) {
        const item = outbox[0];
        const answer = await post(item.text);
        if (answer === null) {
          look.postFailing = true; // not delivered (or no answer): sent again
          show();
          await new Promise((resolve) => setTimeout(resolve, backoff()));
          continue;
        }
        retries = 0;
        look.postFailing = false;
        receive(answer);
        if (outbox[0] === item) {
          outbox.shift().done(); // an error answer carries no number
          watchBusy();
        }
      }
    } finally {
      posting = false;
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
      const body = await response.text();
      try {
        return JSON.parse(body);
      } catch (e) {
        // Not from htagweb: a proxy's error page while the server restarts, say.
        if (response.status >= 500) return null;
        return { err: "the server answered " + response.status };
      }
    } catch (e) {
      return null; // the network failed
    }
  }

  window.addEventListener("DOMContentLoaded", function () {
    createIndicator();
    window.start();
    if (mode === "ws") openSocket();
    else openEvents();
    if (heartbeatMs > 0) setInterval(beat, heartbeatMs);
  });
})();
