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
    document.querySelector("[data-read-at]").textContent = now.read_at || "—";
  } catch (e) { /* the box is restarting: try again next time */ }
}
setInterval(refresh, 3000);
