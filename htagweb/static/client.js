// htagweb browser client.
//
// htag's page defines start(), action() and jevent(); the page's events call
// interact(payload). This file provides interact(): it carries each payload to the
// server (over a WebSocket, or HTTP POST when data-mode="http") and applies the
// actions that come back, in order. Its settings come from its own <script> tag:
// data-endpoint, data-mode and data-instance (the app instance the page shows).
(function () {
  "use strict";

  const script = document.currentScript;
  const endpoint = script.dataset.endpoint;
  const mode = script.dataset.mode;
  let instance = script.dataset.instance;

  function reloadOnce() {
    // The app process behind this page is gone: a page load starts a fresh one. Not in a
    // loop, though: with cookies blocked, every load would meet a gone process again.
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
      window.action({ err: "The app is gone. Reload the page to start it again." });
    }
  }

  function apply(actions) {
    if (actions.reload) {
      reloadOnce();
      return;
    }
    if (actions.instance) {
      instance = actions.instance; // this page now shows the live instance
    }
    window.action(actions);
  }

  // -- HTTP ------------------------------------------------------------------------

  let httpQueue = Promise.resolve();

  async function post(payload) {
    const url = endpoint + "?i=" + encodeURIComponent(instance);
    let actions;
    try {
      const response = await fetch(url, {
        method: "POST",
        body: JSON.stringify(payload),
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
      });
      const text = await response.text();
      try {
        actions = JSON.parse(text);
      } catch (e) {
        actions = { err: "the server answered " + response.status };
      }
    } catch (e) {
      actions = { err: "the server cannot be reached" };
    }
    apply(actions);
  }

  // -- WebSocket -------------------------------------------------------------------

  let socket = null;
  const unsent = [];

  function socketUrl() {
    const url = new URL(endpoint, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("i", instance);
    return url.toString();
  }

  function connect() {
    socket = new WebSocket(socketUrl());
    socket.onopen = function () {
      while (unsent.length) socket.send(unsent.shift());
    };
    socket.onmessage = function (event) {
      apply(JSON.parse(event.data));
    };
    socket.onclose = function () {
      socket = null;
    };
  }

  window.interact = function (payload) {
    if (mode === "http") {
      httpQueue = httpQueue.then(() => post(payload));
      return httpQueue;
    }
    const text = JSON.stringify(payload);
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(text);
    } else {
      unsent.push(text);
      if (!socket) connect();
    }
  };

  window.addEventListener("DOMContentLoaded", function () {
    window.start();
    if (mode === "ws") connect();
  });
})();
