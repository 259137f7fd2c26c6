/* The live trace view: spans from every worker, streamed over EventSource, drawn as waterfalls. */
"use strict";

(function () {
  const app = document.getElementById("traces-app");
  const $ = (id) => document.getElementById(id);
  const list = $("trace-list"), status = $("status"), waiting = $("waiting");
  const MAX_TRACES = 30;
  const KIND_SHORT = { SERVER: "SRV", CLIENT: "CLI", PRODUCER: "PRD", CONSUMER: "CON", INTERNAL: "INT" };

  /** traceId -> {id, spans: Map(spanId -> span), el, fresh} */
  const traces = new Map();
  /** spanId -> traceId, to follow links into other traces */
  const spanIndex = new Map();
  /** worker name -> {worker, color, spans} */
  const workers = new Map();
  let paused = false, pending = [], selected = null;
  const dirty = new Set();

  // --- colours: each worker keeps one colour, distinct on this page; browsers are clients ------
  const CLIENT_COLOR = "#64748b"; // slate: every page (room, follower) drawn as a client
  function colorOf(worker) {
    let entry = workers.get(worker.name);
    if (!entry && worker.client) {
      entry = { worker, color: CLIENT_COLOR, spans: 0 };
      workers.set(worker.name, entry);
    } else if (!entry) {
      const used = new Set([...workers.values()].map((w) => w.color));
      let index = WORKER_PALETTE.indexOf(workerColor(worker.name, worker.port));
      for (let i = 0; i < WORKER_PALETTE.length && used.has(WORKER_PALETTE[index]); i++) {
        index = (index + 1) % WORKER_PALETTE.length;
      }
      entry = { worker, color: WORKER_PALETTE[index], spans: 0 };
      workers.set(worker.name, entry);
    }
    return entry.color;
  }

  function renderLegend() {
    $("legend").replaceChildren(...[...workers.values()].map((entry) => {
      const chip = workerChip(entry.worker);
      chip.style.setProperty("--worker", entry.color);
      chip.append(el("span", { class: "count" }, ` ${entry.spans}`));
      return chip;
    }));
  }

  // --- formatting -------------------------------------------------------------------------------
  function fmtDuration(us) {
    if (us < 1000) return `${Math.max(0, Math.round(us))} µs`;
    if (us < 1e6) return `${(us / 1000).toFixed(us < 10000 ? 2 : 1)} ms`;
    return `${(us / 1e6).toFixed(2)} s`;
  }

  function niceStep(total, target) {
    const raw = total / target;
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 5, 10]) if (raw <= m * power) return m * power;
    return 10 * power;
  }

  function isConnectionOnly(trace) {
    for (const span of trace.spans.values()) {
      if (/^(connect|disconnect) /.test(span.name)) continue;
      // A page's receive of a frame sent outside any trace (the welcome and history frames
      // of the handshake): part of connecting too.
      if (span.worker.client && !span.parent_id && span.kind === "CONSUMER") continue;
      return false;
    }
    return true;
  }

  // --- ingest ------------------------------------------------------------------------------------
  function ingest(batch) {
    const worker = batch.worker;
    const entry = workers.get(worker.name) || (colorOf(worker), workers.get(worker.name));
    for (const span of batch.spans) {
      span.worker = worker;
      let trace = traces.get(span.trace_id);
      if (!trace) {
        trace = { id: span.trace_id, spans: new Map(), el: null, fresh: true };
        traces.set(span.trace_id, trace);
      }
      if (trace.spans.has(span.span_id)) continue; // a replayed event
      trace.spans.set(span.span_id, span);
      spanIndex.set(span.span_id, span.trace_id);
      entry.spans += 1;
      dirty.add(trace.id);
    }
    // Keep the newest traces only.
    if (traces.size > MAX_TRACES) {
      const byAge = [...traces.values()].sort((a, b) => start(a) - start(b));
      for (const old of byAge.slice(0, traces.size - MAX_TRACES)) {
        if (old.el) old.el.remove();
        for (const id of old.spans.keys()) spanIndex.delete(id);
        traces.delete(old.id);
        dirty.delete(old.id);
      }
    }
  }

  function start(trace) {
    let min = Infinity;
    for (const span of trace.spans.values()) min = Math.min(min, span.start_us);
    return min;
  }

  // --- layout: parent/child order with depth --------------------------------------------------------
  function rowsOf(trace) {
    const spans = [...trace.spans.values()];
    const children = new Map();
    const roots = [];
    for (const span of spans) {
      if (span.parent_id && trace.spans.has(span.parent_id)) {
        if (!children.has(span.parent_id)) children.set(span.parent_id, []);
        children.get(span.parent_id).push(span);
      } else {
        roots.push(span);
      }
    }
    const byStart = (a, b) => a.start_us - b.start_us || a.end_us - b.end_us;
    roots.sort(byStart);
    const rows = [];
    const walk = (span, depth, last) => {
      rows.push({ span, depth, last, orphan: depth === 0 && !!span.parent_id });
      const kids = (children.get(span.span_id) || []).sort(byStart);
      kids.forEach((kid, i) => walk(kid, depth + 1, i === kids.length - 1));
    };
    roots.forEach((root) => walk(root, 0, true));
    return rows;
  }

  // --- rendering ------------------------------------------------------------------------------------
  function renderTrace(trace) {
    const rows = rowsOf(trace);
    const t0 = Math.min(...rows.map((r) => r.span.start_us));
    const t1 = Math.max(...rows.map((r) => r.span.end_us));
    const total = Math.max(t1 - t0, 1);
    const pct = (us) => `${((us - t0) / total) * 100}%`;
    const names = new Set(rows.filter((r) => !r.span.worker.client).map((r) => r.span.worker.name));
    const clients = new Set(rows.filter((r) => r.span.worker.client).map((r) => r.span.worker.name));
    const fanout = rows.filter((r) => r.span.kind === "CONSUMER" && r.span.name.startsWith("process ")).length;
    const errors = rows.filter((r) => r.span.status === "ERROR").length;
    const root = rows[0].span;

    const head = el("div", { class: "trace-head" },
      el("span", { class: "root" }, root.name),
      el("span", { class: "tid", title: trace.id }, trace.id.slice(0, 12) + "…"),
      el("span", { class: "pill" }, `${rows.length} span${rows.length === 1 ? "" : "s"}`),
      fanout ? el("span", { class: "pill fanout", title: "process spans: deliveries of a broadcast" }, `fan-out ×${fanout}`) : null,
      errors ? el("span", { class: "pill error" }, `${errors} error${errors === 1 ? "" : "s"}`) : null,
      el("span", { class: "spacer" }),
      el("span", { class: "workers" }, [...names, ...clients].map((name) => {
        const chip = workerChip(workers.get(name).worker);
        chip.style.setProperty("--worker", workers.get(name).color);
        return chip;
      })),
      el("span", { class: "muted mono" }, fmtDuration(total)),
    );

    // Time axis with "nice" ticks.
    const step = niceStep(total, window.innerWidth < 700 ? 2 : 6); // fewer labels on a phone
    const ticks = el("div", { class: "ticks" });
    for (let t = 0; t <= total + 1e-9; t += step) {
      ticks.append(el("span", { class: "tick", style: { left: `${(t / total) * 100}%` } }, t === 0 ? "0" : fmtDuration(t)));
    }
    const axis = el("div", { class: "axis" }, el("div"), ticks, el("div"));

    const waterfall = el("div", { class: "waterfall" }, axis);
    const rowEls = new Map();
    for (const row of rows) {
      const span = row.span;
      const color = workers.get(span.worker.name).color;
      const duration = span.end_us - span.start_us;
      const bar = el("div", {
        class: "bar" + (span.status === "ERROR" || span.attributes["error.type"] ? " error" : ""),
        style: { left: pct(span.start_us), width: `max(3px, ${(duration / total) * 100}%)` },
      }, el("span", { class: "dur" }, fmtDuration(duration)));
      bar.style.setProperty("--worker", color);
      const lane = el("div", { class: "lane" });
      for (let t = step; t < total; t += step) lane.append(el("div", { class: "grid", style: { left: `${(t / total) * 100}%` } }));
      lane.append(bar);
      const twig = row.depth ? (row.last ? "└" : "├") : row.orphan ? "⤷" : "";
      const chip = workerChip(span.worker);
      chip.style.setProperty("--worker", color);
      const rowEl = el("div", {
        class: "span-row" + (span.worker.client ? " client" : "") + (selected === span.span_id ? " selected" : ""),
        dataset: { spanId: span.span_id, spanName: span.name, worker: span.worker.name, kind: span.kind },
        title: `${span.name}\n${span.kind} · ${fmtDuration(duration)} · ${span.worker.name} (pid ${span.worker.pid})`,
        onclick: () => {
          const before = selected && spanIndex.get(selected); // close the detail shown elsewhere
          selected = selected === span.span_id ? null : span.span_id;
          if (before) dirty.add(before);
          renderAllSoon(trace.id);
        },
      },
        el("div", { class: "span-name", style: { "--depth": row.depth } },
          twig ? el("span", { class: "twig" }, twig) : null,
          el("span", { class: `kind kind-${span.kind}`, title: span.kind }, KIND_SHORT[span.kind] || span.kind),
          el("span", { class: "label" }, span.name),
          note(span),
          externalLinks(trace, span),
        ),
        lane,
        el("div", { class: "span-worker" }, chip),
      );
      rowEls.set(span.span_id, { rowEl, bar });
      waterfall.append(rowEl);
    }
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "links-layer");
    waterfall.append(svg);

    const card = el("section", {
      class: "trace" + (trace.fresh ? " fresh" : ""),
      dataset: { traceId: trace.id, workers: [...names].sort().join(","),
                 clients: [...clients].sort().join(","), spans: rows.length },
    }, head, waterfall);
    // Moving a card re-inserts it, which would replay the highlight: play it once.
    card.addEventListener("animationend", () => card.classList.remove("fresh"), { once: true });
    const chosen = rows.find((r) => r.span.span_id === selected);
    if (chosen) card.append(detail(chosen.span));
    trace.fresh = false;
    trace.rowEls = rowEls;
    trace.svg = svg;
    trace.rows = rows;
    return card;
  }

  /** A few words of context after a span's name, from its low-cardinality attributes. */
  function note(span) {
    const a = span.attributes;
    let text = "";
    if (a["channels.sse.streams"] !== undefined) text = `→ ${a["channels.sse.streams"]} SSE stream${a["channels.sse.streams"] === 1 ? "" : "s"}`;
    else if (span.name.startsWith("process ")) text = "→ WebSocket";
    else if (a["chat.action"]) text = a["chat.action"];
    else if (a["chat.message.id"] !== undefined) text = `#${a["chat.message.id"]}`;
    else if (a["channels.connection.status"]) text = a["channels.connection.status"];
    if (a["error.type"]) text = `${text ? text + " · " : ""}${a["error.type"]}`;
    return text ? el("span", { class: "note" + (a["error.type"] ? " bad" : "") }, text) : null;
  }

  /** A chip for links into other traces (a frame's link to its connection's connect span). */
  function externalLinks(trace, span) {
    const outside = span.links.filter((link) => link.trace_id !== trace.id);
    if (!outside.length) return null;
    const names = outside.map((link) => {
      const other = traces.get(spanIndex.get(link.span_id));
      const target = other && other.spans.get(link.span_id);
      return target ? `${target.name} (${target.worker.name})` : `span ${link.span_id} (not shown)`;
    });
    return el("span", {
      class: "ext-link",
      title: `links to ${outside.length === 1 ? "a span" : "spans"} in another trace:\n${names.join("\n")}`,
      onclick: (event) => {
        event.stopPropagation();
        const other = traces.get(spanIndex.get(outside[0].span_id));
        if (other && other.el && !other.el.hidden) other.el.scrollIntoView({ behavior: "smooth", block: "center" });
      },
    }, `⇢ ${outside.length}`);
  }

  function detail(span) {
    const rows = [
      ["name", span.name], ["kind", span.kind], ["status", span.status],
      ["trace id", span.trace_id], ["span id", span.span_id], ["parent id", span.parent_id || "—"],
      ["worker", `${span.worker.name} · pid ${span.worker.pid}` + (span.worker.port ? ` · port ${span.worker.port}` : "")],
      ["start", new Date(span.start_us / 1000).toISOString()], ["duration", fmtDuration(span.end_us - span.start_us)],
      ["links", span.links.length ? span.links.map((l) => `${l.trace_id.slice(0, 8)}…/${l.span_id}`).join("\n") : "—"],
      ["events", String(span.events)],
      ...Object.entries(span.attributes).map(([k, v]) => [
        k, typeof v === "number" && !Number.isInteger(v) ? String(Number(v.toPrecision(4))) : String(v)]),
    ];
    return el("div", { class: "span-detail" },
      el("table", {}, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))))));
  }

  /** Arrows for span links: drawn after layout, in pixels relative to the waterfall. */
  function drawLinks(trace) {
    const svg = trace.svg;
    if (!svg || !trace.el) return;
    const box = svg.parentElement.getBoundingClientRect();
    svg.setAttribute("width", box.width);
    svg.setAttribute("height", box.height);
    svg.replaceChildren();
    const ns = "http://www.w3.org/2000/svg";
    const defs = document.createElementNS(ns, "defs");
    const markerId = `arrow-${trace.id.slice(0, 8)}`;
    defs.innerHTML = `<marker id="${markerId}" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" fill="#64748b" stroke="none"/></marker>`;
    svg.append(defs);
    for (const row of trace.rows) {
      const target = trace.rowEls.get(row.span.span_id);
      const tb = target.bar.getBoundingClientRect();
      for (const link of row.span.links) {
        const source = trace.rowEls.get(link.span_id);
        if (!source) continue; // another trace: shown as a chip next to the name
        const sb = source.bar.getBoundingClientRect();
        const x1 = sb.left - box.left + Math.min(sb.width, 6), y1 = sb.bottom - box.top;
        const x2 = tb.left - box.left, y2 = tb.top - box.top + tb.height / 2;
        const path = document.createElementNS(ns, "path");
        const bend = Math.max(14, Math.abs(x2 - x1) / 2);
        path.setAttribute("d", `M${x1},${y1} C${x1},${y2} ${x2 - bend},${y2} ${x2 - 2},${y2}`);
        path.setAttribute("marker-end", `url(#${markerId})`);
        svg.append(path);
      }
    }
  }

  let frame = 0;
  function renderAllSoon(id) {
    if (id) dirty.add(id);
    if (!frame) frame = requestAnimationFrame(renderDirty);
  }

  function renderDirty() {
    frame = 0;
    if (paused) return;
    const hideConn = $("hide-conn").checked;
    for (const id of dirty) {
      const trace = traces.get(id);
      if (!trace) continue;
      const card = renderTrace(trace);
      if (trace.el) trace.el.replaceWith(card);
      trace.el = card;
    }
    dirty.clear();
    // Newest first.
    const ordered = [...traces.values()].sort((a, b) => start(b) - start(a));
    let visible = 0;
    let position = 0;
    for (const trace of ordered) {
      if (!trace.el) continue;
      const hide = hideConn && isConnectionOnly(trace);
      trace.el.hidden = hide;
      if (!hide) visible += 1;
      if (list.children[position] !== trace.el) list.insertBefore(trace.el, list.children[position] || null);
      position += 1;
    }
    waiting.hidden = visible > 0;
    for (const trace of ordered) if (trace.el && !trace.el.hidden) drawLinks(trace);
    renderLegend();
    app.dataset.traces = String(visible);
  }

  // --- the stream -------------------------------------------------------------------------------------
  function setStatus(state, text) {
    status.className = `status ${state}`;
    status.textContent = text;
  }
  const source = new EventSource(app.dataset.events);
  source.addEventListener("open", () => setStatus("open", "live"));
  source.addEventListener("error", () => setStatus(source.readyState === EventSource.CLOSED ? "closed" : "connecting",
    source.readyState === EventSource.CLOSED ? "closed" : "reconnecting…"));
  source.addEventListener("spans", (event) => {
    const batch = JSON.parse(event.data);
    if (paused) { pending.push(batch); return; }
    ingest(batch);
    renderAllSoon();
  });

  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").textContent = paused ? `Resume` : "Pause";
    if (!paused) { for (const batch of pending) ingest(batch); pending = []; renderAllSoon(); }
  });
  $("clear").addEventListener("click", () => {
    traces.clear(); spanIndex.clear(); dirty.clear(); list.replaceChildren();
    for (const entry of workers.values()) entry.spans = 0;
    renderAllSoon();
  });
  $("hide-conn").addEventListener("change", () => {
    localStorage.setItem("traces.hideConn", $("hide-conn").checked ? "1" : "0");
    renderAllSoon();
  });
  $("hide-conn").checked = localStorage.getItem("traces.hideConn") !== "0";
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { for (const t of traces.values()) if (t.el && !t.el.hidden) drawLinks(t); }, 100);
  });
  window.liveTraces = { traces, workers }; // for the browser test and the curious
})();
