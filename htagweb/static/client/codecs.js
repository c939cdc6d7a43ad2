// -- codecs ---------------------------------------------------------------------------
// How interactions go out and messages come in. sealed: a WebSocket's first message is
// a key exchange. line(ws): one WebSocket's side, {opened(), received(message), ready(),
// send(item)}. streamProof(): resolves to what an event stream's URL proves ("": no
// proof, null: no keys, no stream). pushed(message): a message of the event stream.
// post(item): resolves to the answer to a POST, or null to send it again later.
// answered(answer): takes that answer in.
//
// The codec is chosen as this piece runs, before the page starts; a parano page whose
// parano.js did not load ends the connection at once, which the pieces before this one
// (connection.js, indicator.js, http.js) are ready for.

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
  // parano.js ran before this client, if it loaded: what it defined is taken now, once.
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
