/* The room page: chat over a WebSocket that reconnects on its own, with backoff.
 *
 * An ES module: the socket is the app's TracedWebSocket (a drop-in for WebSocket), so a
 * message's trace starts at this page's send and ends in every reader's receive. */
import { startTracing, TracedWebSocket } from "./telemetry.js";

startTracing("room");

(function () {
  const root = document.getElementById("chat");
  const room = root.dataset.room;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socketUrl = `${scheme}//${location.host}/ws/chat/${encodeURIComponent(room)}/`;
  const $ = (id) => document.getElementById(id);
  const status = $("status"), userInput = $("user"), textInput = $("text"), via = $("via");
  const scroll = $("scroll");
  const messages = new MessageList($("messages"), $("empty"));
  const PING = JSON.stringify({ action: "ping" }); // exactly the frame the server ignores in traces

  $("socket-url").textContent = socketUrl;
  userInput.value = new URLSearchParams(location.search).get("name") || localStorage.getItem("chat.name") || "";
  via.value = localStorage.getItem("chat.via") || "websocket";

  let socket = null, attempts = 0, reconnects = 0, pingTimer = null, pingSent = 0, retryTimer = null;

  function log(text, isError) {
    const list = $("log");
    list.prepend(el("li", { class: isError ? "err" : "" }, `${new Date().toLocaleTimeString()} ${text}`));
    while (list.children.length > 40) list.lastChild.remove();
  }

  function setStatus(state, text) {
    status.className = `status ${state}`;
    status.textContent = text;
    root.dataset.state = state;
  }

  function connect() {
    clearTimeout(retryTimer);
    setStatus("connecting", attempts ? `reconnecting (try ${attempts + 1})…` : "connecting…");
    socket = new TracedWebSocket(socketUrl, undefined, {
      route: "/ws/chat/<room>/",
      // Keep-alives stay out of traces, as on the server (IGNORED_FRAMES).
      ignore: (data) => data === PING || data.startsWith('{"type":"pong"'),
    });
    socket.addEventListener("open", () => {
      attempts = 0;
      setStatus("open", "connected");
      log("open");
      clearInterval(pingTimer);
      pingTimer = setInterval(ping, 15000);
      ping();
    });
    socket.addEventListener("message", (event) => handle(event.data));
    socket.addEventListener("close", (event) => {
      clearInterval(pingTimer);
      log(`closed (code ${event.code})`, event.code !== 1000);
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    // Exponential backoff with jitter, capped at 10 s, so a restarted worker
    // is not hit by every tab at the same instant.
    const delay = Math.min(10000, 500 * 2 ** attempts) * (0.5 + Math.random() / 2);
    attempts += 1;
    reconnects += 1;
    $("reconnects").textContent = String(reconnects);
    setStatus("closed", `offline — retrying in ${(delay / 1000).toFixed(1)} s`);
    retryTimer = setTimeout(connect, delay);
  }

  function ping() {
    if (socket && socket.readyState === WebSocket.OPEN) {
      pingSent = performance.now();
      socket.send(PING);
    }
  }

  function handle(data) {
    let frame;
    try { frame = JSON.parse(data); } catch (err) { log(`unparsable frame: ${err}`, true); return; }
    const atEnd = scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight < 40;
    switch (frame.type) {
      case "welcome":
        $("socket-worker").replaceChildren(workerChip(frame.worker));
        root.dataset.worker = frame.worker.name;
        log(`welcome from ${frame.worker.name}`);
        break;
      case "history":
        for (const message of frame.messages) {
          messages.add(message, { name: message.worker, via: message.via }, null);
        }
        log(`history: ${frame.messages.length} messages`);
        break;
      case "chat":
        messages.add(frame.message, frame.origin, frame.delivered_by);
        break;
      case "pong":
        $("rtt").textContent = `ping ${Math.round(performance.now() - pingSent)} ms`;
        break;
      case "error":
        log(`error ${frame.code}: ${frame.error}`, true);
        break;
      default:
        log(`unknown frame type ${frame.type}`, true);
    }
    if (atEnd || frame.type === "history") messages.scrollToEnd(scroll);
  }

  async function send(event) {
    event.preventDefault();
    const user = userInput.value.trim(), text = textInput.value.trim();
    if (!user || !text) return;
    localStorage.setItem("chat.name", user);
    if (via.value === "http") {
      const response = await fetch(`/rooms/${encodeURIComponent(room)}/messages/`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user, text }),
      });
      if (!response.ok) { log(`POST failed: ${response.status}`, true); return; }
    } else {
      if (!socket || socket.readyState !== WebSocket.OPEN) { log("not connected", true); return; }
      socket.send(JSON.stringify({ action: "chat", user, text }));
    }
    textInput.value = "";
    textInput.focus();
  }

  $("composer").addEventListener("submit", send);
  via.addEventListener("change", () => localStorage.setItem("chat.via", via.value));
  $("other-port").addEventListener("submit", (event) => {
    event.preventDefault();
    const port = $("port").value;
    if (port) window.open(`${location.protocol}//${location.hostname}:${port}${location.pathname}`, "_blank");
  });
  const port = Number(location.port || 80);
  $("port").value = String(port % 2 === 0 ? port + 1 : port - 1); // 8000 <-> 8001
  connect();
})();
