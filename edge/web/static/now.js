// Live values for the Now page: the same JSON the API gives, every 3 seconds.
"use strict";
async function refresh() {
  try {
    const answer = await fetch("/api/now", {credentials: "same-origin", cache: "no-store"});
    if (answer.status === 401) { window.location = "/login"; return; }
    if (!answer.ok) return;
    const now = await answer.json();
    for (const cell of document.querySelectorAll("[data-flow]")) {
      const w = now.flows[cell.dataset.flow];
      cell.textContent = (w === null || w === undefined) ? "—" : Math.round(w).toString();
    }
    const at = document.querySelector("[data-read-at]");
    // the box's local time, as the page was drawn: seconds since 1970 plus its UTC offset
    const local = now.read_at && new Date((now.read_at + 3600 * Number(at.dataset.utcOffsetH)) * 1000);
    at.textContent = local ? local.toISOString().slice(11, 19) : "—";
  } catch (e) { /* the box is restarting: try again next time */ }
}
setInterval(refresh, 3000);
