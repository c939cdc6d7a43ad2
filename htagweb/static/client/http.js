// -- HTTP: POST for interactions, Server-Sent Events for pushes ----------------------
// The event stream is the connection of connection.js in HTTP mode; POSTs go one at a
// time, each sent again (after a backoff) until it gets an answer.

const posts = { running: false, failures: 0 }; // failures: since a POST last got an answer

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
