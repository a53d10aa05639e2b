// The review desk's only script: keyboard review, buttons that call the API, live job progress.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf"]').content;

async function api(method, url, body) {
  const response = await fetch(url, {
    method,
    credentials: "same-origin",
    headers: {"X-CSRF-Token": csrf(), "Content-Type": "application/json", "Accept": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

// Buttons with data-post call the API, then show the page anew (the retrain polls until done).
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-post]");
  if (!button) return;
  button.disabled = true;
  try {
    await api("POST", button.dataset.post);
    location.reload();
  } catch (error) {
    alert(error.message);
    button.disabled = false;
  }
});

// Sign-out goes through fetch so that it carries the CSRF header.
document.addEventListener("submit", async (event) => {
  if (!event.target.matches("[data-csrf-form]")) return;
  event.preventDefault();
  await fetch(event.target.action, {method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": csrf()}});
  location.href = "/signin";
});

function pollRetrain() {
  const state = document.getElementById("retrain-state");
  if (!state || state.dataset.state !== "running") return;
  setTimeout(async function check() {
    const outcome = await api("GET", "/v1/retrain");
    if (outcome.state === "running") setTimeout(check, 2000);
    else location.reload();
  }, 2000);
}

function pollJobs() {
  const table = document.getElementById("jobs");
  if (!table) return;
  const last = new Map();
  setInterval(async () => {
    const now = Date.now() / 1000;
    const rates = [];
    for (const job of await api("GET", table.dataset.refresh)) {
      const row = table.querySelector(`tr[data-job="${CSS.escape(job.job)}"]`);
      if (!row) continue;
      row.cells[1].textContent = job.state;
      row.querySelector("progress").value = job.done;
      row.cells[3].textContent = `${job.done}/${job.total}`;
      row.cells[4].textContent = job.failed;
      const before = last.get(job.job);
      if (before && job.done > before.done) rates.push(`${job.job.slice(0, 8)}: ${((job.done - before.done) / (now - before.at)).toFixed(0)} images/s`);
      last.set(job.job, {done: job.done, at: now});
    }
    document.getElementById("rates").textContent = rates.join(" · ");
  }, 2000);
}

// The review queue: one item at a time, least confident first, driven from the keyboard.
function review() {
  const section = document.getElementById("review");
  if (!section) return;
  const $ = (id) => document.getElementById(id);
  let queue = [];
  const history = [];  // what was done, newest last, for undo
  let done = 0;
  const started = Date.now();

  async function load() {
    const job = section.dataset.job;
    const seen = new Set(history.map((h) => `${h.item.job}:${h.item.index}`));
    const rows = await api("GET", "/v1/review?limit=200" + (job ? `&job=${encodeURIComponent(job)}` : ""));
    queue = rows.filter((r) => !seen.has(`${r.job}:${r.index}`));
    show();
  }

  function show() {
    const item = queue[0];
    $("item").hidden = !item;
    $("empty").hidden = !!item;
    $("remaining").textContent = `${queue.length} waiting · ${done} done` +
      (done ? ` · ${(done / ((Date.now() - started) / 60000)).toFixed(1)} a minute` : "");
    if (!item) return;
    $("image").src = `/v1/review/${encodeURIComponent(item.job)}/${item.index}/image`;
    $("where").textContent = `${item.item} (job ${item.job.slice(0, 8)}, item ${item.index})`;
    const threshold = Number(section.dataset.threshold);
    const field = item.text !== undefined && item.text !== null || Array.isArray(item.chars);
    // A field's reading character by character, the uncertain ones highlighted; a digit whole.
    const chars = field ? (item.chars || []) : [{label: item.label ?? "?", confidence: item.confidence ?? 0, top3: item.top3}];
    $("reading").replaceChildren(...chars.map((c) => {
      const span = document.createElement("span");
      span.textContent = c.label;
      span.className = c.confidence < threshold ? "char uncertain" : "char";
      return span;
    }));
    $("confidence").textContent = item.confidence == null ? "" : `${(item.confidence * 100).toFixed(1)}%`;
    const alternatives = (c) => (c.top3 || []).map(([label, p]) => `${label} (${(p * 100).toFixed(1)}%)`).join("  ");
    $("alternatives").textContent = field
      ? chars.map((c, i) => c.confidence < threshold ? `#${i + 1}: ${alternatives(c)}` : "").filter(Boolean).join(" · ")
      : alternatives(chars[0]);
    $("reasons").textContent = (item.review_reasons || []).join("; ");
    $("answer").maxLength = field ? 32 : 1;
    $("answer").value = "";
    $("answer").focus();
  }

  async function act(kind) {
    const item = queue[0];
    if (!item) return;
    const base = `/v1/review/${encodeURIComponent(item.job)}/${item.index}`;
    try {
      if (kind === "label") {
        const label = $("answer").value.trim() || String(item.text ?? item.label);
        await api("POST", base, {label});
        $("status").textContent = `${item.item}: ${label}`;
      } else if (kind === "unreadable") {
        await api("POST", `${base}/unreadable`);
        $("status").textContent = `${item.item}: unreadable`;
      } else {
        $("status").textContent = `${item.item}: skipped`;
      }
    } catch (error) {
      $("status").textContent = error.message;
      return;
    }
    history.push({item: queue.shift(), kind});
    if (kind !== "skip") done += 1;
    if (!queue.length) await load(); else show();
  }

  function undo() {
    const last = history.pop();
    if (!last) return;
    if (last.kind !== "skip") done -= 1;
    queue.unshift(last.item);  // decide again: a new label replaces the one given
    $("status").textContent = `undone: ${last.item.item} (${last.kind})`;
    show();
  }

  $("answer").addEventListener("keydown", (event) => {
    const keys = {Enter: () => act("label"), s: () => act("skip"), x: () => act("unreadable"), z: undo};
    if (event.ctrlKey || event.metaKey || event.altKey || !(event.key in keys)) return;
    event.preventDefault();
    keys[event.key]();
  });
  load().catch((error) => { $("status").textContent = error.message; });
}

document.addEventListener("DOMContentLoaded", () => { review(); pollJobs(); pollRetrain(); });
