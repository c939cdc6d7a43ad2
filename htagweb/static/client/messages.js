// -- answers, pushes -----------------------------------------------------------------
// What comes from the server is applied here, in order, by htag's action(); and the
// page's events call interact(), which numbers each interaction and sends it.

const RELOAD_AT_MOST_EVERY_MS = 10000;

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
