// htagweb browser client.
//
// htag's page defines start(), action() and jevent(); the page's events call
// interact(payload). This client provides interact(): it carries each payload to the
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
// parano.js, which parano pages load just before this client. Messages go out and come
// in through a codec: the plain one (codecs.js), or parano.js's sealed one.
//
// Settings come from the client's own <script> tag: data-endpoint, data-mode,
// data-instance (the app instance the page shows), data-heartbeat (seconds, 0: none),
// data-parano, data-boot (development: the id of the server process; when a new one
// answers, the page reloads to show the new code).
//
// The client is written in pieces, one concern each, in htagweb/static/client/; the page
// loads them as one script, /_htagweb/client.js, which htagweb/web/assets.py puts
// together: every piece, in the order of its CLIENT_PIECES, inside one function, in
// strict mode. The pieces share that function's scope, so a name defined at the top level
// of one piece is seen by all the others; but their top levels run in order, so what one
// runs at once (not in a function called later) reads only what earlier pieces defined.
// In that order:
//
//   shared.js      this file: the values shared with the server, the page's settings,
//                  the outbox, the URL of a connection, the backoff
//   connection.js  the connection to the app: its states and their moves (`link`)
//   indicator.js   what the user sees: busy, reconnecting
//   messages.js    answers and pushes applied; interact()
//   websocket.js   the WebSocket, and the heartbeat
//   http.js        HTTP: POSTs for interactions, Server-Sent Events for pushes
//   codecs.js      how messages go out and come in: plain, or parano.js's sealed codec
//   devreload.js   development: a reload when the server restarts with new code
//   start.js       the page starts

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

const BACKOFF_FIRST_MS = 250;
const BACKOFF_CAP_MS = 10000;

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
