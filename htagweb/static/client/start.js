// -- the page starts -------------------------------------------------------------------
// Once the document is parsed: the indicator, htag's start(), then the first connection
// and the heartbeat.

window.addEventListener("DOMContentLoaded", function () {
  createIndicator();
  window.start();
  if (!codec) {
    cannotSeal(PARANO_MISSING);
    return;
  }
  link.connect(link.mode);
  if (heartbeatMs > 0) setInterval(beat, heartbeatMs);
});
