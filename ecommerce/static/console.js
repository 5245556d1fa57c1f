// The sale-night console: live numbers over Server-Sent Events, small SVG
// charts, actions that carry the session's CSRF token. No build step, nothing
// fetched from elsewhere.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const HISTORY = 180; // points per chart: three minutes at one a second
const history = new Map(); // item id -> {stock: [], rate: [], line: []}
const rooms = new Map(); // item id -> its waiting room in the last snapshot (or null)
const cards = new Map(); // item id -> its article element
const changed = new Map(); // item id -> when its figures or rules last changed (ms)
const seen = new Map(); // item id -> its figures in the last snapshot, as text
// The database's story on the charts: when it stopped answering ("fault") and
// when another server became the primary ("promoted"), by snapshot number.
const marks = [];
let tick = 0; // snapshots shown so far
let primary = null; // the primary's address in the last snapshot
let troubleSince = null; // the snapshot number when the database stopped answering

function text(el, value) { el.textContent = value === null || value === undefined ? "–" : String(value); }

function draw(svg, values) {
  const line = svg.querySelector("polyline");
  for (const old of svg.querySelectorAll("line.mark")) old.remove();
  if (values.length < 2) { line.setAttribute("points", ""); return; }
  const first = tick - values.length + 1; // the snapshot number of values[0]
  for (const mark of marks) {
    if (mark.tick < first) continue;
    const x = ((mark.tick - first) / (values.length - 1)) * 300;
    const rule = document.createElementNS("http://www.w3.org/2000/svg", "line");
    rule.setAttribute("class", `mark ${mark.kind}`);
    rule.setAttribute("x1", x.toFixed(1)); rule.setAttribute("x2", x.toFixed(1));
    rule.setAttribute("y1", "0"); rule.setAttribute("y2", "60");
    svg.appendChild(rule);
  }
  const max = Math.max(...values, 1e-9), min = Math.min(...values, 0);
  const span = max - min || 1;
  const points = values.map((v, i) => {
    const x = (i / (values.length - 1)) * 300;
    const y = 58 - ((v - min) / span) * 56;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  line.setAttribute("points", points.join(" "));
}

function windowText(item) {
  if (!item.sale_starts_at && !item.sale_ends_at) return "always open";
  const fmt = (t) => (t ? new Date(t).toLocaleString() : "…");
  return `${fmt(item.sale_starts_at)} → ${fmt(item.sale_ends_at)}`;
}

function itemDone(answer) {
  return `done: stock ${answer.stock}, price ${answer.price}, limit ${answer.per_user_limit ?? "none"}`;
}

function roomDone(room) {
  const rate = room.rate_per_s === null ? "measured pace" : `fixed ${room.rate_per_s}/s`;
  return `done: room ${room.open ? "open" : "closed"} (${room.mode}), ${rate}, max admitted ${room.max_admitted}`;
}

// POST an action; its answer (or the API's error message) shows in `result`.
async function act(itemId, path, body, result, done = itemDone) {
  result.classList.remove("error");
  result.textContent = "…";
  try {
    const response = await fetch(`/console/items/${itemId}${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const answer = await response.json();
    if (!response.ok) {
      result.classList.add("error");
      result.textContent = answer.error ? answer.error.message : `HTTP ${response.status}`;
      return;
    }
    result.textContent = done(answer);
  } catch (error) {
    result.classList.add("error");
    result.textContent = `no answer: ${error}`;
  }
}

function card(item) {
  let article = cards.get(item.id);
  if (article) return article;
  article = document.getElementById("item-template").content.firstElementChild.cloneNode(true);
  article.dataset.itemId = item.id;
  const form = article.querySelector(".actions");
  form.querySelector('[name="price"]').dataset.shown = "";
  form.addEventListener("click", (event) => {
    const action = event.target.dataset && event.target.dataset.action;
    if (!action) return;
    const value = (name) => form.querySelector(`[name="${name}"]`).value.trim();
    const result = article.querySelector(".result");
    if (action === "open") act(item.id, "/sale", { open: true }, result);
    if (action === "close") act(item.id, "/sale", { open: false }, result);
    if (action === "restock") act(item.id, "/restock", { quantity: Number(value("quantity")) }, result);
    if (action === "limit") {
      const limit = value("limit");
      act(item.id, "", { per_user_limit: limit === "" ? null : Number(limit) }, result);
    }
    if (action === "price") act(item.id, "", { price: value("price") }, result);
  });
  roomControls(item.id, article);
  document.getElementById("items").appendChild(article);
  cards.set(item.id, article);
  history.set(item.id, { stock: [], rate: [], line: [] });
  return article;
}

// A number typed in a field, or the text itself (the API then says what is wrong).
function numberOrText(raw) {
  return raw !== "" && Number.isFinite(Number(raw)) ? Number(raw) : raw;
}

// Open or close the item's room, set its fixed rate (empty: the measured pace)
// and its cap; every change sends `open` as the room has it now.
function roomControls(itemId, article) {
  const form = article.querySelector(".room-actions");
  const result = article.querySelector(".room-result");
  form.addEventListener("click", (event) => {
    const action = event.target.dataset && event.target.dataset.room;
    if (!action) return;
    const value = (name) => form.querySelector(`[name="${name}"]`).value.trim();
    const room = rooms.get(itemId);
    const open = room ? room.open : false;
    let body = null;
    if (action === "open") body = { open: true, mode: value("mode") };
    if (action === "close") body = { open: false };
    if (action === "rate") {
      const rate = value("rate");
      body = { open, rate_per_s: rate === "" ? null : numberOrText(rate) };
    }
    if (action === "max") body = { open, max_admitted: numberOrText(value("max_admitted")) };
    if (body) act(itemId, "/queue", body, result, roomDone);
  });
}

function seconds(s) {
  if (s === null || s === undefined) return null;
  return s < 120 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

// Where the stock runs out in the line: places after `sold_out_after` (counted
// from the first admitted) are told sold out.
function cutoff(room) {
  if (room.sold_out_after === null) return "none";
  const last = room.serving + room.line_length; // the back of the line
  return room.sold_out_after < last
    ? `sold out after place ${room.sold_out_after}`
    : `none (the stock reaches place ${room.sold_out_after})`;
}

function showRoom(article, room) {
  const q = (cls) => article.querySelector(cls);
  const state = q(".room-state");
  state.textContent = room ? `${room.open ? "open" : "closed"} · ${room.mode}` : "none";
  state.className = `room-state ${room ? (room.open ? "open" : "closed") : "none"}`;
  text(q(".line-length"), room && room.line_length);
  text(q(".in-flight"), room && room.in_flight);
  let rate = null;
  if (room) {
    const measured = room.admission_rate_per_s === null ? "–" : room.admission_rate_per_s;
    rate = room.rate_per_s === null ? `${measured} measured` : `${measured} (fixed ${room.rate_per_s})`;
  }
  text(q(".admission-rate"), rate);
  text(q(".wait"), room && seconds(room.estimated_wait_s));
  text(q(".cutoff"), room && cutoff(room));
  text(q(".max-admitted"), room && room.max_admitted);
  // The mode and the cap show the room's until the operator picks others.
  const mode = q('[name="mode"]');
  if (room && document.activeElement !== mode && mode.dataset.shown !== room.mode) {
    mode.value = room.mode;
    mode.dataset.shown = room.mode;
  }
  const max = q('[name="max_admitted"]');
  if (room && document.activeElement !== max && (max.dataset.shown || "") === max.value) {
    max.value = room.max_admitted;
    max.dataset.shown = String(room.max_admitted);
  }
}

function database(state) {
  const banner = document.getElementById("banner");
  troubleSince = null;
  banner.hidden = true;
  if (!state) return;
  if (primary !== null && state.primary && state.server !== primary) {
    marks.push({ tick, kind: "promoted" });
    banner.textContent = `The primary changed: ${primary} → ${state.server}.`;
    banner.className = "banner info";
    banner.hidden = false;
  }
  if (state.primary) primary = state.server;
  const role = state.primary ? "primary" : "standby (read-only)";
  const standbys = state.synchronous > 0
    ? `synchronous standby attached (${state.synchronous} of ${state.standbys})`
    : state.standbys > 0 ? `standby attached, not synchronous: commits are on this node only`
    : "no standby attached: commits are on this node only";
  text(document.getElementById("database"), `${role} ${state.server} · ${standbys}`);
}

function trouble(message) {
  const banner = document.getElementById("banner");
  if (troubleSince === null) { troubleSince = tick; marks.push({ tick, kind: "fault" }); }
  banner.textContent = `No primary reachable: pays are answered 503 until one is. (${message})`;
  banner.className = "banner down";
  banner.hidden = false;
}

function instances(list) {
  const box = document.getElementById("instances-box");
  box.hidden = !list;
  if (!list) return;
  const shown = list.map((i) => `${i.name} ${i.in_service ? "in service" : i.status.toLowerCase()}` +
    (i.in_service ? ` (${i.sessions} open)` : ""));
  text(document.getElementById("instances"), shown.join(" · ") || "none");
}

function show(snapshot) {
  tick += 1;
  while (marks.length && marks[0].tick < tick - HISTORY) marks.shift();
  database(snapshot.database);
  instances(snapshot.instances);
  text(document.getElementById("pays"), snapshot.pays_per_s);
  const lat = snapshot.pay_latency_ms;
  text(document.getElementById("latency"), lat.p50 === null ? null : `${lat.p50} / ${lat.p99} ms`);
  text(document.getElementById("batch"), snapshot.batch_size);
  const next = snapshot.next_expiry ? `, next lapses ${new Date(snapshot.next_expiry).toLocaleTimeString()}` : "";
  text(document.getElementById("pending"), `${snapshot.pending}${next}`);
  const refusals = Object.entries(snapshot.refusals_per_s).filter(([, v]) => v > 0);
  text(document.getElementById("refusals"), refusals.length ? refusals.map(([k, v]) => `${k} ${v}`).join(" · ") : "none");
  for (const item of snapshot.items) {
    const article = card(item);
    const q = (cls) => article.querySelector(cls);
    text(q(".name"), item.name);
    const state = q(".sale-state");
    state.textContent = item.on_sale ? "on sale" : "closed";
    state.className = item.on_sale ? "sale-state" : "sale-state off";
    text(q(".available"), item.available);
    text(q(".reserved"), item.reserved);
    text(q(".sold"), item.sold);
    text(q(".refunded"), item.refunded);
    text(q(".rate"), item.pays_per_s);
    text(q(".price"), item.price);
    // The price field shows the current price until the operator types another.
    const priceInput = q('[name="price"]');
    priceInput.placeholder = item.price;
    if (document.activeElement !== priceInput && priceInput.dataset.shown === priceInput.value) {
      priceInput.value = item.price;
    }
    priceInput.dataset.shown = item.price;
    const room = item.room ? [item.room.open, item.room.line_length, item.room.rate_per_s, item.room.max_admitted] : [];
    const figures = [item.available, item.reserved, item.sold, item.price, item.per_user_limit, item.on_sale, ...room].join("|");
    if (seen.get(item.id) !== figures) changed.set(item.id, Date.now());
    seen.set(item.id, figures);
    text(q(".limit"), item.per_user_limit ?? "none");
    text(q(".window"), windowText(item));
    const h = history.get(item.id);
    h.stock.push(Number(item.available));
    h.rate.push(item.pays_per_s);
    h.line.push(item.room ? item.room.line_length : 0);
    if (h.stock.length > HISTORY) { h.stock.shift(); h.rate.shift(); h.line.shift(); }
    draw(q(".stock-chart"), h.stock);
    draw(q(".rate-chart"), h.rate);
    draw(q(".line-chart"), h.line);
    rooms.set(item.id, item.room);
    showRoom(article, item.room);
  }
  order(snapshot.items);
}

// Items that are selling first (fastest first), then those changed last.
function order(items) {
  const ranked = [...items].sort((a, b) =>
    (b.pays_per_s || 0) - (a.pays_per_s || 0) || (changed.get(b.id) || 0) - (changed.get(a.id) || 0) || a.id - b.id);
  const list = document.getElementById("items");
  const current = [...list.children].filter((el) => el.dataset.itemId);
  if (ranked.every((item, n) => current[n] && current[n].dataset.itemId === String(item.id))) return;
  for (const item of ranked) list.appendChild(cards.get(item.id));
}

function connect() {
  const status = document.getElementById("connection");
  const source = new EventSource("/console/events");
  source.addEventListener("open", () => { status.textContent = "live"; status.className = "connection live"; });
  source.addEventListener("snapshot", (event) => show(JSON.parse(event.data)));
  source.addEventListener("trouble", (event) => {
    const message = JSON.parse(event.data);
    status.textContent = message;
    status.className = "connection down";
    trouble(message);
  });
  // EventSource reconnects by itself (after a restart too); say so meanwhile.
  source.addEventListener("error", () => { status.textContent = "reconnecting…"; status.className = "connection down"; });
}

document.getElementById("signout").addEventListener("click", async () => {
  await fetch("/console/logout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
  window.location.reload();
});

connect();
