/* Helpers shared by every page of the example: worker colours, small DOM utilities. */
"use strict";

const WORKER_PALETTE = [
  "#4f46e5", // indigo
  "#0d9488", // teal
  "#ea580c", // orange
  "#db2777", // pink
  "#2563eb", // blue
  "#65a30d", // lime
  "#9333ea", // purple
  "#b45309", // amber
];

/** FNV-1a: a stable small hash so a worker keeps its colour on every page. */
function hashString(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Colour of a worker: by port (given, or ending its name, as in chat-8001), else by name.
 *  Ports make neighbouring workers differ; the name alone keeps history rows consistent. */
function workerColor(name, port) {
  const trailing = /(\d+)$/.exec(String(name || ""));
  const key = port ? Number(port) : trailing ? Number(trailing[1]) : hashString(String(name || "?"));
  return WORKER_PALETTE[key % WORKER_PALETTE.length];
}

function paintWorkerBadges(root) {
  root.querySelectorAll("[data-worker]").forEach((el) => {
    el.style.setProperty("--worker", workerColor(el.dataset.worker, el.dataset.port));
  });
}

/** Create an element: el("span", {class: "x", title: "y"}, "text", child, ...). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "style" && typeof value === "object") {
      for (const [prop, v] of Object.entries(value)) {
        if (prop.startsWith("--")) node.style.setProperty(prop, String(v)); // custom properties
        else node.style[prop] = v;
      }
    }
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function workerChip(worker, extraClass) {
  if (!worker) return null;
  const chip = el("span", {
    class: "worker-chip " + (extraClass || ""),
    dataset: { worker: worker.name, port: worker.port || "" },
    title: `${worker.name} · pid ${worker.pid}` + (worker.port ? ` · port ${worker.port}` : ""),
  }, worker.name);
  chip.style.setProperty("--worker", workerColor(worker.name, worker.port));
  return chip;
}

function userColor(name) {
  return `hsl(${hashString(name) % 360} 55% 45%)`;
}

function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Render one chat message (used by the room page and the follower page). */
function messageRow(message, origin, deliveredBy) {
  const via = origin && origin.via ? origin.via : "";
  const route = el("span", { class: "route" },
    workerChip(origin),
    deliveredBy && origin && deliveredBy.name !== origin.name ? el("span", { class: "arrow" }, "→") : null,
    deliveredBy && origin && deliveredBy.name !== origin.name ? workerChip(deliveredBy) : null,
    via ? el("span", { class: `via via-${via}`, title: `sent over ${via}` }, via) : null,
  );
  return el("li", { class: "message", dataset: { id: message.id } },
    el("span", { class: "avatar", style: { background: userColor(message.user) } },
      message.user.slice(0, 1).toUpperCase()),
    el("div", { class: "body" },
      el("div", { class: "meta" },
        el("strong", { class: "user" }, message.user),
        el("time", { datetime: message.timestamp, title: message.timestamp }, formatTime(message.timestamp)),
        route,
      ),
      el("div", { class: "text" }, message.text),
    ),
  );
}

/** Keep a list of messages sorted by id without duplicates (history + live + replays). */
class MessageList {
  constructor(listElement, emptyElement) {
    this.list = listElement;
    this.empty = emptyElement;
    this.rows = new Map();
  }
  add(message, origin, deliveredBy) {
    if (this.rows.has(message.id)) return false;
    const row = messageRow(message, origin, deliveredBy);
    const later = [...this.rows.keys()].filter((id) => id > message.id).sort((a, b) => a - b)[0];
    if (later !== undefined) this.list.insertBefore(row, this.rows.get(later));
    else this.list.append(row);
    this.rows.set(message.id, row);
    if (this.empty) this.empty.hidden = true;
    return true;
  }
  scrollToEnd(container) {
    container.scrollTop = container.scrollHeight;
  }
}
