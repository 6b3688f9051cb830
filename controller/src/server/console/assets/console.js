// Gantry console: keeps <main> live by fetching the same page again every few seconds
// (the server answers just the <main> part when asked with X-Gantry-Live), and asks
// before an action that has data-confirm. Nothing else runs in the browser.
"use strict";
(function () {
  const main = document.querySelector("main[data-live]");
  const every = main ? Number(main.dataset.live) : 0;
  let busy = false;
  function editing() {
    const a = document.activeElement;
    return a && main.contains(a) && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  }
  async function refresh() {
    if (busy || document.hidden || editing()) return;
    busy = true;
    try {
      const r = await fetch(location.href, { headers: { "X-Gantry-Live": "1" }, credentials: "same-origin", cache: "no-store" });
      if (r.status === 401 || r.status === 403) { location.reload(); return; }
      if (r.ok) {
        main.innerHTML = await r.text();
        main.dataset.updated = String(Date.now());
        document.documentElement.classList.remove("stale");
      } else {
        document.documentElement.classList.add("stale");
      }
    } catch (_) {
      document.documentElement.classList.add("stale");
    } finally {
      busy = false;
    }
  }
  if (every > 0) setInterval(refresh, every);
  document.addEventListener("submit", function (e) {
    const form = e.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) e.preventDefault();
  });
})();
