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
// In parano mode (data-parano="1") every interaction, answer and push is sealed with
// AES-256-GCM under keys agreed by ECDH P-256 for each connection (WebCrypto); see
// htagweb/app/parano.py for the protocol. A parano page applies nothing that comes unsealed
// but the server's control messages (reload, rekey, an error's text, the key exchange),
// and proves each new key exchange, and each event stream it opens, with its current keys.
//
// Settings come from this file's own <script> tag: data-endpoint, data-mode,
// data-instance (the app instance the page shows), data-heartbeat (seconds, 0: none),
// data-parano, data-boot (development: the id of the server process; when a new one
// answers, the page reloads to show the new code).
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
  const parano = settings.parano === "1";

  let instance = settings.instance;
  let mode = settings.mode; // "ws" or "http"; "ws" becomes "http" when it cannot work
  let gone = false; // the app behind this page ended: the next interaction reloads
  let connectedOnce = false; // reconnections ask for the current tree (r=1)
  // Failed attempts since the last success: of the socket or event stream, of POSTs.
  const attempts = { stream: 0, post: 0 };

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
    url.searchParams.set("i", instance);
    url.searchParams.set("p", pageId);
    if (reconnecting) url.searchParams.set("r", "1");
    if (parano && scheme === "ws") url.searchParams.set("s", "1"); // keys first
    if (streamProof) url.searchParams.set("e", streamProof); // parano: an event stream
    return url.toString();
  }

  function backoff(channel) {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_FIRST_MS * 2 ** attempts[channel]);
    attempts[channel] += 1;
    return ceiling / 2 + (Math.random() * ceiling) / 2; // jitter: pages do not return in step
  }

  // -- what the user sees ------------------------------------------------------------
  // Classes on <body> that apps may style: htagweb-busy (an interaction takes longer
  // than BUSY_AFTER_MS) and htagweb-reconnecting. An update of the whole page replaces
  // <body>, so they are set again after each one; the indicator lives outside <body>.

  const look = { busy: false, streamDown: false, postFailing: false };
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
    const reconnecting = look.streamDown || look.postFailing;
    if (document.body) {
      document.body.classList.toggle("htagweb-busy", look.busy);
      document.body.classList.toggle("htagweb-reconnecting", reconnecting);
    }
    if (indicator) indicator.hidden = !reconnecting;
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

  function markGone() {
    // The app behind this page ended: nothing waits for an answer or a connection now.
    gone = true;
    while (outbox.length) outbox.shift().done();
    watchBusy();
    look.streamDown = look.postFailing = false;
    show();
  }

  function reloadOnce() {
    // The app process behind this page is gone: a page load starts a fresh one. Not in a
    // loop, though: with cookies blocked, every load would meet a gone process again.
    markGone();
    let last = 0;
    try {
      last = Number(window.sessionStorage.getItem("htagweb-reload")) || 0;
    } catch (e) {
      // no storage: reload anyway, once per page
    }
    if (Date.now() - last > 10000) {
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

  // -- parano: sealed messages -----------------------------------------------------------

  const CHANNELS = { r: 2, p: 3 }; // answers, pushes (1: interactions)
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  function toBase64(bytes) {
    const all = new Uint8Array(bytes);
    let binary = "";
    for (let start = 0; start < all.length; start += 8192) {
      // in slices: spreading a large message into one call overflows the stack
      binary += String.fromCharCode(...all.subarray(start, start + 8192));
    }
    return btoa(binary);
  }

  function fromBase64(text) {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  }

  function nonce(channel, counter) {
    const bytes = new Uint8Array(12);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, channel);
    view.setUint32(4, Math.floor(counter / 2 ** 32));
    view.setUint32(8, counter >>> 0);
    return bytes;
  }

  // The keys and counters of one connection. hello() gives this side's public key,
  // agree() takes the server's; seal() and open() then work, in order.
  class Seal {
    async hello(prover) {
      if (!window.crypto.subtle) throw new Error("parano mode needs https (or localhost)");
      const curve = { name: "ECDH", namedCurve: "P-256" };
      this.pair = await crypto.subtle.generateKey(curve, false, ["deriveBits"]);
      this.raw = new Uint8Array(await crypto.subtle.exportKey("raw", this.pair.publicKey));
      const key = toBase64(this.raw);
      // A page that has keys proves it holds them: its page id alone gets no one new keys.
      return prover ? key + "." + (await prover.prove(this.raw)) : key;
    }

    async agree(serverHello) {
      const serverRaw = fromBase64(serverHello);
      const curve = { name: "ECDH", namedCurve: "P-256" };
      const serverKey = await crypto.subtle.importKey("raw", serverRaw, curve, false, []);
      const shared = await crypto.subtle.deriveBits(
        { name: "ECDH", public: serverKey }, this.pair.privateKey, 256);
      const base = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
      const salt = new Uint8Array(this.raw.length + serverRaw.length);
      salt.set(this.raw);
      salt.set(serverRaw, this.raw.length);
      const info = encoder.encode("htagweb parano v1");
      const bits = new Uint8Array(await crypto.subtle.deriveBits(
        { name: "HKDF", hash: "SHA-256", salt, info }, base, 768));
      const aes = (bytes, use) => crypto.subtle.importKey("raw", bytes, "AES-GCM", false, [use]);
      this.toServer = await aes(bits.slice(0, 32), "encrypt");
      this.fromServer = await aes(bits.slice(32, 64), "decrypt");
      this.proofKey = await crypto.subtle.importKey(
        "raw", bits.slice(64), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      this.sent = 0;
      this.received = { r: 0, p: 0 };
      this.streams = 0; // event streams opened with these keys
    }

    async streamProof() {
      // An event stream's "n.proof": the app takes each n once, in increasing order, so a
      // stream's URL read on the way and opened again gets no pushes of this page.
      this.streams += 1;
      const n = this.streams;
      const data = encoder.encode("htagweb parano v1 stream" + n);
      return n + "." + toBase64(await crypto.subtle.sign("HMAC", this.proofKey, data));
    }

    async prove(raw) {
      // The next key exchange's public key, signed with these keys (no counter involved).
      const label = encoder.encode("htagweb parano v1 proof");
      const data = new Uint8Array(label.length + raw.length);
      data.set(label);
      data.set(raw, label.length);
      return toBase64(await crypto.subtle.sign("HMAC", this.proofKey, data));
    }

    async seal(text) {
      this.sent += 1;
      const c = this.sent;
      const data = await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce(1, c) }, this.toServer, encoder.encode(text));
      return JSON.stringify({ c, d: toBase64(data) });
    }

    async open(message) {
      const ch = message.ch;
      if (!(ch in CHANNELS) || message.c !== this.received[ch] + 1) {
        throw new Error("a sealed message out of order");
      }
      const plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: nonce(CHANNELS[ch], message.c) }, this.fromServer,
        fromBase64(message.d));
      this.received[ch] = message.c;
      return JSON.parse(decoder.decode(plain));
    }
  }

  function cannotSeal(error) {
    markGone(); // no keys, no interactions: plaintext would be refused anyway
    apply({ err: error.message });
  }

  // The keys this page last agreed on with its app, over either transport: they prove the
  // next key exchange.
  let pageSeal = null;

  // The app seals every action it sends. What comes unsealed is applied only as one of the
  // server's control messages, rebuilt from its known fields (an error is only ever text
  // to show); anything else was added on the way and is dropped.
  let droppedOnce = false;

  function controlOf(message) {
    if (message.reload === true) return { reload: true };
    if (message.rekey === true) return { rekey: true };
    if (typeof message.err === "string") return { err: message.err };
    if (!droppedOnce) {
      droppedOnce = true;
      apply({ err: "an unsealed message was dropped (parano mode)" });
    }
    return null;
  }

  // Messages are opened one after the other (WebCrypto is asynchronous), in arrival order.
  let opening = Promise.resolve();

  function receiveFrom(seal, message) {
    opening = opening.then(async () => {
      if (!message.d) {
        const control = controlOf(message);
        if (control) receive(control);
        return;
      }
      let actions;
      try {
        actions = await seal.open(message);
      } catch (e) {
        actions = { err: "a sealed message was refused: " + e.message };
      }
      receive(actions);
    });
    return opening;
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
      } else if (socket && socket.readyState === WebSocket.OPEN && (!parano || socketSeal)) {
        sendOnSocket(socket, item);
      } // else it is sent when the socket opens again
    });
  };

  // -- WebSocket -----------------------------------------------------------------------

  let socket = null;
  let socketSeal = null; // parano: the open socket's keys, once agreed
  let sealing = Promise.resolve();
  let pingSentAt = 0; // a ping not answered yet (0: none)

  function sendOnSocket(ws, item) {
    if (!parano) {
      ws.send(item.text);
      return;
    }
    const seal = socketSeal;
    sealing = sealing.then(async () => {
      try {
        const text = await seal.seal(item.text);
        if (socket === ws) ws.send(text);
      } catch (e) {
        apply({ err: "an interaction could not be sealed: " + e.message });
      }
    });
  }

  function openSocket() {
    if (gone) return;
    const ws = new WebSocket(urlOf("ws", connectedOnce));
    const seal = parano ? new Seal() : null;
    let opened = false;
    let helloHeard = false; // parano: this socket's one key exchange
    socket = ws;
    ws.onopen = function () {
      opened = connectedOnce = true;
      attempts.stream = 0;
      pingSentAt = 0;
      setStreamDown(false);
      if (seal) {
        seal.hello(pageSeal).then((hello) => ws.send(JSON.stringify({ hello })), cannotSeal);
      } else {
        for (const item of outbox) ws.send(item.text);
      }
    };
    ws.onmessage = function (event) {
      pingSentAt = 0; // anything heard answers the ping
      if (event.data === "pong") return;
      const message = parsed(event.data) || {}; // {}: dropped below (parano), or ignored
      if (!seal) {
        receive(message);
        return;
      }
      if (!helloHeard && typeof message.hello === "string" && !message.rekey) {
        helloHeard = true;
        opening = opening.then(async () => {
          try {
            await seal.agree(message.hello);
          } catch (e) {
            apply({ err: "the key exchange failed: " + e.message });
            ws.close();
            return;
          }
          if (socket !== ws) return; // a later socket proves with the keys it had
          socketSeal = pageSeal = seal;
          for (const item of outbox) sendOnSocket(ws, item);
        });
        if (message.d) receiveFrom(seal, message); // the current tree, with the new keys
        return;
      }
      if (!message.d && message.rekey === true) {
        ws.close(); // keys out of step: the next socket agrees on new ones, resends the rest
        return;
      }
      receiveFrom(seal, message); // sealed, or unsealed: a control message or dropped
    };
    ws.onclose = function (event) {
      if (socket === ws) socketLost(event.code, opened);
    };
  }

  function socketLost(code, opened) {
    socket = null;
    socketSeal = null;
    if (code === 4404 || gone) {
      markGone(); // the app ended (or the server sent "reload" first)
      return;
    }
    if (code === 1009 && outbox.length) {
      outbox.shift().done(); // too big for the server: sending it again would not help
      watchBusy();
      apply({ err: "This interaction is too large for the server." });
    }
    // A socket that never opened on this page points at a proxy refusing WebSockets; one
    // that did, at a server that is away, unless it keeps failing.
    if (!opened && (!connectedOnce || attempts.stream >= SOCKET_TRIES_BEFORE_FALLBACK)) {
      openEvents(); // if HTTP works where the WebSocket does not, use HTTP from now on
    } else {
      retryLater(openSocket);
    }
  }

  function retryLater(connect) {
    watchBoot();
    setStreamDown(true);
    setTimeout(connect, backoff("stream"));
  }

  function beat() {
    // Timers of hidden tabs may run once a minute: only a ping left unanswered for a whole
    // period means a dead connection.
    const now = Date.now();
    const silent = pingSentAt && now - pingSentAt > Math.max(heartbeatMs, 5000);
    if (socket && socket.readyState === WebSocket.OPEN) {
      if (silent) {
        const dead = socket; // it died without a close: replace it
        socketLost(1006, true);
        dead.close();
      } else {
        if (!pingSentAt) pingSentAt = now;
        socket.send("ping");
      }
    } else if (events && eventsHeardAt && now - eventsHeardAt > 2 * heartbeatMs + 5000) {
      const dead = events; // the server's pings stopped: the stream died silently
      events = null;
      dead.close();
      eventsFailed(true);
    }
  }

  // -- HTTP: POST for interactions, Server-Sent Events for pushes ----------------------

  let events = null;
  let eventsHeardAt = 0; // the server pings the stream every heartbeat
  let posting = false;
  let httpSeal = null; // parano: the keys agreed with the app for this page
  let agreeing = null;

  function agreeOverHttp() {
    // Resolves to the page's keys, or null when the server could not be reached.
    if (!agreeing) {
      agreeing = (async () => {
        const seal = new Seal();
        let hello;
        try {
          hello = await seal.hello(pageSeal);
        } catch (e) {
          cannotSeal(e);
          return null;
        }
        const answer = await post(JSON.stringify({ hello }));
        if (answer && typeof answer.hello === "string") {
          try {
            await seal.agree(answer.hello);
          } catch (e) {
            apply({ err: "the key exchange failed: " + e.message });
            return null;
          }
          httpSeal = pageSeal = seal;
          return seal;
        }
        const control = answer && controlOf(answer);
        if (control) receive(control); // reload, or an error
        return null;
      })().finally(() => {
        agreeing = null;
      });
    }
    return agreeing;
  }

  async function openEvents() {
    if (gone) return;
    // Parano: keys first, then the stream proves with them that this page opens it.
    const seal = parano ? httpSeal || (await agreeOverHttp()) : null;
    if (parano && !seal) {
      eventsFailed(false);
      return;
    }
    const proof = seal ? await seal.streamProof() : null;
    const source = new EventSource(urlOf("http", connectedOnce, proof));
    let opened = false;
    events = source;
    source.onopen = function () {
      opened = connectedOnce = true;
      attempts.stream = 0;
      eventsHeardAt = Date.now();
      setStreamDown(false);
      if (mode !== "http") {
        mode = "http";
        pump(); // what waited for the WebSocket goes now
      }
    };
    source.addEventListener("ping", function () {
      eventsHeardAt = Date.now();
    });
    source.onmessage = function (event) {
      eventsHeardAt = Date.now();
      const message = parsed(event.data);
      if (!message) return; // not from htagweb
      if (parano) receiveFrom(httpSeal, message); // sealed, or a control message, or dropped
      else receive(message);
    };
    source.addEventListener("ended", function () {
      source.close();
      markGone(); // the app ended: no reconnection
    });
    source.onerror = function () {
      source.close(); // reconnections are ours, with backoff
      if (events !== source || gone) return;
      events = null;
      eventsFailed(opened);
    };
  }

  function reopenEvents() {
    if (!events) return; // not open: it agrees when it opens
    const current = events;
    events = null;
    current.close();
    openEvents();
  }

  function eventsFailed(opened) {
    if (!opened && mode === "ws") {
      retryLater(openSocket); // HTTP fails as well: the server is away
    } else {
      retryLater(openEvents);
    }
  }

  async function pump() {
    if (posting) return;
    posting = true;
    try {
      while (outbox.length && !gone) {
        const item = outbox[0];
        let answer = null;
        if (!parano) {
          answer = await post(item.text);
        } else if (httpSeal || (await agreeOverHttp())) {
          if (item.sealedBy !== httpSeal) {
            // Sealed once per key: sent again after a lost answer, it is the same message.
            item.sealed = await httpSeal.seal(item.text);
            item.sealedBy = httpSeal;
          }
          answer = await post(item.sealed);
        }
        if (answer !== null && parano && !answer.d) {
          // Unsealed: a control message, or something added on the way, dropped: then the
          // same sealed message goes again, and the app sends its sealed answer again.
          answer = controlOf(answer);
        }
        if (answer === null) {
          look.postFailing = true; // not delivered (or no answer): sent again
          show();
          await new Promise((resolve) => setTimeout(resolve, backoff("post")));
          continue;
        }
        attempts.post = 0;
        look.postFailing = false;
        if (answer.rekey) {
          httpSeal = null; // the app lost this page's keys, or they went out of step
          reopenEvents(); // its pushes come sealed with the new keys
          continue;
        }
        if (parano && answer.d) {
          await receiveFrom(httpSeal, answer);
        } else {
          // Not sealed: refused on the way (a limit), so the server never opened it and
          // its counter went unused. New keys (proven with these) put both sides in step.
          if (parano) httpSeal = null;
          receive(answer);
        }
        if (outbox[0] === item) {
          outbox.shift().done(); // answers from a proxy, or a 429, carry no number
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
      const answer = parsed(await response.text());
      if (answer) return answer;
      // Not from htagweb: a proxy's error page while the server restarts, say.
      if (response.status >= 500) return null;
      return { err: "the server answered " + response.status };
    } catch (e) {
      return null; // the network failed
    }
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
      setTimeout(check, 200);
    };
    check();
  }

  window.addEventListener("DOMContentLoaded", function () {
    createIndicator();
    window.start();
    if (mode === "ws") openSocket();
    else openEvents();
    if (heartbeatMs > 0) setInterval(beat, heartbeatMs);
  });
})();
