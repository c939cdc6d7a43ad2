// -- what the user sees ------------------------------------------------------------
// Classes on <body> that apps may style: htagweb-busy (an interaction takes longer
// than BUSY_AFTER_MS) and htagweb-reconnecting. An update of the whole page replaces
// <body>, so they are set again after each one; the indicator lives outside <body>.
// Reconnecting: a connection (connection.js) or a POST (http.js) failed since it last
// worked, and the app is not gone.

const BUSY_AFTER_MS = 300;

const look = { busy: false, busyTimer: null, indicator: null };

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
