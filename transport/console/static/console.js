// Marmot console: the little script the server-rendered pages use.
// Confirms, copy buttons, the live event feed, live detail pages, the list's
// live columns and the "test with an event" box. No library; text is always
// set with textContent, never parsed as HTML, except fragments of this
// console's own server-rendered (escaped) pages.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function say(element, text) {
  element.textContent = text;
}

// Forms with data-confirm ask first.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// Buttons with data-copy put their value on the clipboard.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(button.dataset.copy);
    say(button, "Copied");
  } catch (err) {
    window.prompt("Copy:", button.dataset.copy);
  }
  setTimeout(() => say(button, label), 1500);
});

// The automations list: last fired, next deadline, open buckets, firings in 24 h.
async function fillStates() {
  const table = document.getElementById("automations");
  if (!table) return;
  const rows = [...table.querySelectorAll("tbody tr[data-id]")];
  if (!rows.length) return;
  const query = rows.map((r) => "id=" + encodeURIComponent(r.dataset.id)).join("&");
  const reply = await fetch(table.dataset.stateUrl + "?" + query, { credentials: "same-origin" });
  if (!reply.ok) return;
  const states = await reply.json();
  for (const row of rows) {
    const state = states[row.dataset.id] || {};
    for (const cell of row.querySelectorAll("[data-col]")) {
      const value = state.error ? "?" : state[cell.dataset.col];
      say(cell, value === undefined || value === null ? "—" : String(value));
    }
  }
}

// A detail page: when its stream says "changed", fetch the page and swap #live.
function followDetail() {
  const live = document.getElementById("live");
  if (!live || !live.dataset.liveUrl) return;
  const source = new EventSource(live.dataset.liveUrl);
  let busy = false;
  source.addEventListener("changed", async () => {
    if (busy) return;
    busy = true;
    try {
      const reply = await fetch(window.location.href, { credentials: "same-origin" });
      if (reply.ok) {
        const page = new DOMParser().parseFromString(await reply.text(), "text/html");
        const fresh = page.getElementById("live");
        const open = new Set([...live.querySelectorAll("details")].flatMap((d, i) => (d.open ? [i] : [])));
        if (fresh) live.replaceChildren(...fresh.childNodes);
        [...live.querySelectorAll("details")].forEach((d, i) => { if (open.has(i)) d.open = true; });
      }
    } finally {
      busy = false;
    }
  });
}

// The event feed: rows from the stream, newest first, at most MAX_ROWS kept;
// batches are drawn once per animation frame so a fast stream cannot freeze the page.
const MAX_ROWS = 500;

function feedRow(prefix, row) {
  const tr = document.createElement("tr");
  const cell = (child) => { const td = document.createElement("td"); td.append(child); tr.append(td); };
  const link = (href, text) => { const a = document.createElement("a"); a.href = href; a.textContent = text; return a; };
  cell(link(prefix + "/events/" + row.seq, String(row.seq)));
  cell(document.createTextNode(row.occurred.replace("T", " ").slice(0, 19)));
  cell(document.createTextNode(row.event));
  if (row.automation) {
    cell(link(prefix + "/automations/" + row.automation, row.resource));
  } else {
    const code = document.createElement("code");
    code.textContent = row.resource;
    cell(code);
  }
  return tr;
}

function followFeed() {
  const table = document.getElementById("feed");
  if (!table) return;
  const body = table.tBodies[0];
  const status = document.getElementById("feed-status");
  const pause = document.getElementById("feed-pause");
  const prefix = table.dataset.prefix;
  let pending = [];
  let paused = false;
  let seen = 0;
  let scheduled = false;
  const url = table.dataset.liveUrl + "&after=" + encodeURIComponent(table.dataset.after);
  const source = new EventSource(url);
  const draw = () => {
    scheduled = false;
    if (paused || !pending.length) return;
    const batch = pending.slice(-MAX_ROWS);
    pending = [];
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) fragment.append(feedRow(prefix, batch[i]));
    body.prepend(fragment);
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
    say(status, seen + " new event(s) since the page opened");
  };
  source.onmessage = (message) => {
    const rows = JSON.parse(message.data);
    seen += rows.length;
    pending.push(...rows);
    if (pending.length > MAX_ROWS) pending = pending.slice(-MAX_ROWS);
    if (!scheduled) { scheduled = true; requestAnimationFrame(draw); }
  };
  source.addEventListener("failure", (message) => say(status, "feed stopped: " + JSON.parse(message.data).error));
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    say(pause, paused ? "Resume feed" : "Pause feed");
    if (!paused) requestAnimationFrame(draw);
  });
}

// The status page refreshes itself.
function refreshStatus() {
  const status = document.getElementById("status");
  if (!status) return;
  setInterval(async () => {
    const reply = await fetch(window.location.href, { credentials: "same-origin" });
    if (!reply.ok) return;
    const page = new DOMParser().parseFromString(await reply.text(), "text/html");
    const fresh = page.getElementById("status");
    if (fresh) status.replaceChildren(...fresh.childNodes);
  }, 1000 * Number(status.dataset.refresh || 5));
}

// "Test with an event": per condition, would it match and fire.
function testBox() {
  const button = document.getElementById("test-run");
  if (!button) return;
  const out = document.getElementById("test-result");
  button.addEventListener("click", async () => {
    say(out, "testing…");
    const reply = await fetch(button.dataset.url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify({
        automation: document.getElementById("document").value,
        event: document.getElementById("test-event").value,
      }),
    });
    let body;
    try { body = await reply.json(); } catch (err) { body = { ok: false, lines: ["error: " + reply.status + " " + reply.statusText] }; }
    const pre = document.createElement("pre");
    pre.textContent = (body.lines || []).join("\n") || "(no verdict)";
    out.replaceChildren(pre);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  fillStates();
  followDetail();
  followFeed();
  refreshStatus();
  testBox();
});
