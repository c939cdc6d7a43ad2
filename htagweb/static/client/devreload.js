// -- development: reload when the server was restarted with new code ---------------
// Only pages served with data-boot (python -m htagweb); link.backOff() calls watchBoot()
// when a connection is lost.

const BOOT_CHECK_EVERY_MS = 200;

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
    setTimeout(check, BOOT_CHECK_EVERY_MS);
  };
  check();
}
