// htagweb parano mode, in the browser: parano pages load this file just before client.js.
//
// Every interaction, answer and push is sealed with AES-256-GCM under keys agreed by
// ECDH P-256 for each connection (WebCrypto); see htagweb/app/parano.py for the protocol.
// A parano page applies nothing that comes unsealed but the server's control messages
// (reload, rekey, an error's text, the key exchange), and proves each new key exchange,
// and each event stream it opens, with its current keys.
//
// It defines one global, window.htagwebParano: client.js calls its codec(hooks) once and
// then sends and receives through the codec it gets (see htagweb/static/client/codecs.js).
(function () {
  "use strict";

  // Shared with htagweb/app/parano.py, under its names: tests/test_client_constants.py
  // checks that they are equal.
  const INFO = "htagweb parano v1"; // HKDF's info
  const PROOF_LABEL = "htagweb parano v1 proof"; // a key exchange proven with the last keys
  const STREAM_LABEL = "htagweb parano v1 stream"; // an event stream proven with the keys
  const CHANNEL_INTERACTION = 1; // the first 4 bytes of each nonce
  const CHANNEL_ANSWER = 2;
  const CHANNEL_PUSH = 3;
  const CHANNEL_OF = { r: CHANNEL_ANSWER, p: CHANNEL_PUSH }; // by a sealed message's "ch"

  const CURVE = { name: "ECDH", namedCurve: "P-256" };
  const KEY_BITS = 768; // from HKDF: the key to the server, the key from it, the proof key
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
      this.pair = await crypto.subtle.generateKey(CURVE, false, ["deriveBits"]);
      this.raw = new Uint8Array(await crypto.subtle.exportKey("raw", this.pair.publicKey));
      const key = toBase64(this.raw);
      // A page that has keys proves it holds them: its page id alone gets no one new keys.
      return prover ? key + "." + (await prover.prove(this.raw)) : key;
    }

    async agree(serverHello) {
      const serverRaw = fromBase64(serverHello);
      const serverKey = await crypto.subtle.importKey("raw", serverRaw, CURVE, false, []);
      const shared = await crypto.subtle.deriveBits(
        { name: "ECDH", public: serverKey }, this.pair.privateKey, 256);
      const base = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
      const salt = new Uint8Array(this.raw.length + serverRaw.length);
      salt.set(this.raw);
      salt.set(serverRaw, this.raw.length);
      const info = encoder.encode(INFO);
      const bits = new Uint8Array(await crypto.subtle.deriveBits(
        { name: "HKDF", hash: "SHA-256", salt, info }, base, KEY_BITS));
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
      const data = encoder.encode(STREAM_LABEL + n);
      return n + "." + toBase64(await crypto.subtle.sign("HMAC", this.proofKey, data));
    }

    async prove(raw) {
      // The next key exchange's public key, signed with these keys (no counter involved).
      const label = encoder.encode(PROOF_LABEL);
      const data = new Uint8Array(label.length + raw.length);
      data.set(label);
      data.set(raw, label.length);
      return toBase64(await crypto.subtle.sign("HMAC", this.proofKey, data));
    }

    async seal(text) {
      this.sent += 1;
      const c = this.sent;
      const data = await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce(CHANNEL_INTERACTION, c) }, this.toServer,
        encoder.encode(text));
      return JSON.stringify({ c, d: toBase64(data) });
    }

    async open(message) {
      const ch = message.ch;
      if (!(ch in CHANNEL_OF) || message.c !== this.received[ch] + 1) {
        throw new Error("a sealed message out of order");
      }
      const plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: nonce(CHANNEL_OF[ch], message.c) }, this.fromServer,
        fromBase64(message.d));
      this.received[ch] = message.c;
      return JSON.parse(decoder.decode(plain));
    }
  }

  // The sealed codec of one page. `hooks` are client.js's: post(text) (resolves to the
  // answer, or null), receive(message), apply(actions), cannotSeal(text) (the page gives
  // up), outbox (the interactions waiting, in order) and isCurrent(socket).
  function codec(hooks) {
    // The keys this page last agreed on with its app, over either transport: they prove
    // the next key exchange.
    let pageSeal = null;
    let httpSeal = null; // the keys of the POSTs and the event stream
    let agreeing = null; // the key exchange over HTTP under way
    let droppedOnce = false;
    // WebCrypto is asynchronous: messages are opened one after the other in arrival
    // order, and interactions sealed and sent one after the other in outbox order.
    let opening = Promise.resolve();
    let sealing = Promise.resolve();

    function cannotSeal(error) {
      hooks.cannotSeal(error.message);
    }

    // The app seals every action it sends. What comes unsealed is applied only as one of
    // the server's control messages, rebuilt from its known fields (an error is only ever
    // text to show); anything else was added on the way and is dropped.
    function controlOf(message) {
      if (message.reload === true) return { reload: true };
      if (message.rekey === true) return { rekey: true };
      if (typeof message.err === "string") return { err: message.err };
      if (!droppedOnce) {
        droppedOnce = true;
        hooks.apply({ err: "an unsealed message was dropped (parano mode)" });
      }
      return null;
    }

    function receiveFrom(seal, message) {
      opening = opening.then(async () => {
        if (!message.d) {
          const control = controlOf(message);
          if (control) hooks.receive(control);
          return;
        }
        let actions;
        try {
          actions = await seal.open(message);
        } catch (e) {
          actions = { err: "a sealed message was refused: " + e.message };
        }
        hooks.receive(actions);
      });
      return opening;
    }

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
          const answer = await hooks.post(JSON.stringify({ hello }));
          if (answer && typeof answer.hello === "string") {
            try {
              await seal.agree(answer.hello);
            } catch (e) {
              hooks.apply({ err: "the key exchange failed: " + e.message });
              return null;
            }
            httpSeal = pageSeal = seal;
            return seal;
          }
          const control = answer && controlOf(answer);
          if (control) hooks.receive(control); // reload, or an error
          return null;
        })().finally(() => {
          agreeing = null;
        });
      }
      return agreeing;
    }

    // One WebSocket: its own key exchange, its first message.
    function line(ws) {
      const seal = new Seal();
      let helloHeard = false;
      let keyed = false; // its keys are agreed: interactions may go

      function send(item) {
        sealing = sealing.then(async () => {
          try {
            const text = await seal.seal(item.text);
            if (hooks.isCurrent(ws)) ws.send(text);
          } catch (e) {
            hooks.apply({ err: "an interaction could not be sealed: " + e.message });
          }
        });
      }

      function received(message) {
        if (!helloHeard && typeof message.hello === "string" && !message.rekey) {
          helloHeard = true;
          opening = opening.then(async () => {
            try {
              await seal.agree(message.hello);
            } catch (e) {
              hooks.apply({ err: "the key exchange failed: " + e.message });
              ws.close();
              return;
            }
            if (!hooks.isCurrent(ws)) return; // a later socket proves with the keys it had
            keyed = true;
            pageSeal = seal;
            for (const item of hooks.outbox) send(item);
          });
          if (message.d) receiveFrom(seal, message); // the current tree, with the new keys
          return;
        }
        if (!message.d && message.rekey === true) {
          ws.close(); // keys out of step: the next socket agrees on new ones, resends the rest
          return;
        }
        receiveFrom(seal, message); // sealed, or unsealed: a control message or dropped
      }

      return {
        opened() {
          seal.hello(pageSeal).then((hello) => ws.send(JSON.stringify({ hello })), cannotSeal);
        },
        received,
        ready: () => keyed,
        send,
      };
    }

    return {
      sealed: true,
      line,

      async streamProof() {
        // Keys first: the stream proves with them that this page opens it.
        const seal = httpSeal || (await agreeOverHttp());
        return seal ? seal.streamProof() : null;
      },

      pushed(message) {
        receiveFrom(httpSeal, message); // sealed, or a control message, or dropped
      },

      async post(item) {
        const seal = httpSeal || (await agreeOverHttp());
        if (!seal) return null;
        if (item.sealedBy !== seal) {
          // Sealed once per key: sent again after a lost answer, it is the same message.
          item.sealed = await seal.seal(item.text);
          item.sealedBy = seal;
        }
        const answer = await hooks.post(item.sealed);
        if (answer === null || answer.d) return answer;
        // Unsealed: a control message, or something added on the way, dropped: then the
        // same sealed message goes again, and the app sends its sealed answer again.
        const control = controlOf(answer);
        if (control && control.rekey) httpSeal = null; // the app lost these keys, or
        return control; // they went out of step: the next POST agrees on new ones
      },

      answered(answer) {
        if (answer.d) return receiveFrom(httpSeal, answer);
        // Not sealed: refused on the way (a limit), so the server never opened it and its
        // counter went unused. New keys (proven with these) put both sides in step.
        httpSeal = null;
        hooks.receive(answer);
        return Promise.resolve();
      },
    };
  }

  window.htagwebParano = Object.freeze({ codec });
})();
