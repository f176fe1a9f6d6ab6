// shopsync admin pages: the live parts only. Every page works without this file.
"use strict";

// Sync log: new entries arrive over server-sent events as rendered rows.
function tailLog() {
  const table = document.getElementById("synclog");
  if (!table || !table.dataset.stream || !window.EventSource) return;
  const rows = document.getElementById("synclog-rows");
  const state = document.getElementById("live-state");
  const empty = document.getElementById("synclog-empty");
  const source = new EventSource(table.dataset.stream);
  source.addEventListener("entry", (event) => {
    const entry = JSON.parse(event.data);
    if (rows.querySelector(`tr[data-id="${entry.id}"]`)) return;
    rows.insertAdjacentHTML("afterbegin", entry.html);
    rows.firstElementChild.classList.add("fresh");
    localTimes(rows.firstElementChild);
    if (empty) empty.hidden = true;
    while (rows.children.length > 500) rows.lastElementChild.remove();
  });
  source.addEventListener("open", () => { state.textContent = "Live: new entries appear at the top as they happen."; });
  source.addEventListener("error", () => { state.textContent = "Live tail interrupted; reconnecting…"; });
  table.dataset.live = "1";
}

// Import: poll the progress while the page is open.
function followImport() {
  const box = document.getElementById("import");
  if (!box || !box.dataset.progress) return;
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  const duration = (s) => {
    if (s === null || s === undefined) return "—";
    s = Math.max(0, Math.round(s));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")} min`;
  };
  async function tick() {
    try {
      const resp = await fetch(box.dataset.progress, { credentials: "same-origin" });
      if (resp.ok) {
        const p = await resp.json();
        const bar = document.getElementById("import-bar");
        bar.max = p.total || 1;
        bar.value = p.done || 0;
        bar.textContent = `${p.done ?? 0} of ${p.total ?? "?"}`;
        set("import-state", p.state ?? "none");
        set("import-done", p.done ?? "—");
        set("import-total", p.total ?? "—");
        set("import-rate", p.rate === null || p.rate === undefined ? "—" : Number(p.rate).toFixed(1));
        set("import-eta", duration(p.eta_seconds));
        const snap = document.getElementById("import-snapshot");
        if (snap) {
          snap.hidden = !p.snapshot;
          if (p.snapshot) {
            set("import-snapshot-pages", p.snapshot.pages_done);
            set("import-snapshot-total", p.snapshot.pages);
            set("import-snapshot-pools", p.snapshot.pools);
          }
        }
      }
    } catch (e) { /* the agent restarts or the network blinks: try again */ }
    setTimeout(tick, 1000);
  }
  tick();
}

// Times in this browser's time zone (the page renders UTC; the original stays as the title).
function localTimes(root) {
  const shown = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" };
  for (const el of root.querySelectorAll("time[data-local]:not([data-shown])")) {
    const when = new Date(el.getAttribute("datetime"));
    if (isNaN(when)) continue;
    el.title = `${el.textContent} UTC`;
    el.textContent = when.toLocaleString(undefined, shown);
    el.dataset.shown = "local";
  }
  const head = document.getElementById("time-head");
  if (head) head.textContent = "Time (local)";
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  tailLog();
  followImport();
});
