/* The follower page: a read-only room over EventSource (reconnects and resumes on its own).
 *
 * An ES module: the stream is the app's TracedEventSource (a drop-in for EventSource that
 * reads the traceparent: field the native class hides), so each event's receive span is the
 * child of the server's delivery. */
import { startTracing, TracedEventSource } from "./telemetry.js";

startTracing("follower");

(function () {
  const root = document.getElementById("follow");
  const $ = (id) => document.getElementById(id);
  const status = $("status"), scroll = $("scroll");
  const messages = new MessageList($("messages"), $("empty"));
  const badge = document.querySelector(".worker-badge");
  const pageWorker = { name: badge.dataset.worker, port: badge.dataset.port };

  function setStatus(state, text) {
    status.className = `status ${state}`;
    status.textContent = text;
    root.dataset.state = state;
  }

  function show(message, origin, deliveredBy) {
    const atEnd = scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight < 40;
    if (messages.add(message, origin, deliveredBy) && atEnd) messages.scrollToEnd(scroll);
  }

  // Recent history once; after that the stream (and its Last-Event-ID replay) keeps us whole.
  fetch(`${root.dataset.history}?limit=50`)
    .then((response) => response.json())
    .then((body) => {
      for (const message of body.messages) show(message, { name: message.worker, via: message.via }, null);
      messages.scrollToEnd(scroll);
    })
    .catch(() => {});

  const source = new TracedEventSource(root.dataset.events, {}, { route: "/rooms/<room>/events/" });
  source.addEventListener("open", () => setStatus("open", "live"));
  source.addEventListener("error", () => {
    // The browser reconnects by itself, sending Last-Event-ID; CLOSED means it gave up.
    if (source.readyState === TracedEventSource.CLOSED) setStatus("closed", "stream closed");
    else setStatus("connecting", "reconnecting…");
  });
  source.addEventListener("chat.message", (event) => {
    const data = JSON.parse(event.data);
    if (event.lastEventId) $("last-id").textContent = `id ${event.lastEventId}`;
    show(data.message, data.origin, pageWorker);
  });
})();
