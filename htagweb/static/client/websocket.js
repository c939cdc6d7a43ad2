// -- WebSocket -----------------------------------------------------------------------
// One socket carries interactions, their answers and pushes, through the codec's line.
// The heartbeat (beat(), every data-heartbeat seconds from start.js) also watches the
// event stream of http.js.

const SILENCE_GRACE_MS = 5000; // on top of the heartbeat before a connection counts as dead

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
