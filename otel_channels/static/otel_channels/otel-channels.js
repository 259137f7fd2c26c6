/**
 * otel_channels browser module: traced drop-ins for the browser's WebSocket and EventSource.
 *
 *   import { configure, TracedWebSocket, TracedEventSource } from "/static/otel_channels/otel-channels.js";
 *   configure({ api });   // the page's @opentelemetry/api, once its web SDK is registered (optional)
 *   const ws = new TracedWebSocket(url, protocols, { route: "/ws/chat/<room>/" });
 *   const es = new TracedEventSource(url, { withCredentials: false }, { route: "/rooms/<room>/events/" });
 *
 * Spans and attributes are those of the Python clients (otel_channels.client, docs/clients.md),
 * so one query finds both: `connect {route}` CLIENT, `send {route}` PRODUCER, `receive {route}`
 * CONSUMER, `disconnect {route}` INTERNAL. No message contents are ever recorded, only sizes.
 *
 * No dependency: the module never imports @opentelemetry/api itself (a page may hold a
 * different copy than a bundler would pick); it uses the object given to configure(). With
 * none, both classes are plain forwarding wrappers: no spans, no JSON parsing, no ids built.
 */

const VERSION = "0.1.0";
const SCOPE = "otel_channels.browser";
// W3C Trace Context: version 00, 32 + 16 lower-case hex digits, not all zero.
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const INVALID_TRACE = "00000000000000000000000000000000";
const INVALID_SPAN = "0000000000000000";
// RFC 6455 7.4.1 as on the server and the Python client: 1000 normal closure, 1001 going
// away, 1005 no status received; anything else (1006 dropped, 1011, 4xxx) is an error.
const NORMAL_CLOSE = new Set([1000, 1001, 1005]);
// Reconnect after any end but these (1001 "going away" is a restarting server: come back).
const FINAL_CLOSE = new Set([1000, 1005]);
const SENSITIVE = ["token", "access_token", "refresh_token", "id_token", "key", "api_key",
  "apikey", "password", "passwd", "secret", "client_secret", "signature", "sig", "jwt",
  "auth", "authorization", "session", "sessionid", "code", "x-amz-signature",
  "x-amz-security-token", "x-goog-signature"];  // otel_channels.telemetry.names, as the server redacts
// SpanKind / SpanStatusCode of @opentelemetry/api (stable numbers, so no import is needed).
const KIND = { INTERNAL: 0, SERVER: 1, CLIENT: 2, PRODUCER: 3, CONSUMER: 4 };
const STATUS_ERROR = 2;

const config = {
  api: null,
  tracer: null,
  jsonTraceparentKey: "traceparent",
  sendSpans: true,
  sensitiveQueryParams: new Set(SENSITIVE),
};

/**
 * Set the @opentelemetry/api object (and defaults) the traced classes use.
 *
 * @param {object} options
 * @param {object|null} [options.api] the page's @opentelemetry/api; null turns tracing off.
 * @param {object} [options.tracerProvider] default: the api's global provider.
 * @param {string|null} [options.jsonTraceparentKey] the server's JSON_TRACEPARENT_KEY.
 * @param {boolean} [options.sendSpans] a PRODUCER span per sent message (else a span event).
 * @param {string[]} [options.sensitiveQueryParams] query values redacted in url.* attributes.
 */
export function configure(options = {}) {
  if ("api" in options) {
    const api = options.api || null;
    config.api = api;
    const provider = options.tracerProvider || (api && api.trace.getTracerProvider());
    config.tracer = api ? provider.getTracer(SCOPE, VERSION) : null;
  }
  if ("jsonTraceparentKey" in options) config.jsonTraceparentKey = options.jsonTraceparentKey;
  if ("sendSpans" in options) config.sendSpans = Boolean(options.sendSpans);
  if (options.sensitiveQueryParams) {
    config.sensitiveQueryParams = new Set(options.sensitiveQueryParams.map((p) => p.toLowerCase()));
  }
}

// -- helpers ---------------------------------------------------------------------------------

/** Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]. */
export function backoffDelay(attempt, base, cap, random = Math.random) {
  return random() * Math.min(cap, base * 2 ** Math.min(attempt, 62));
}

function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) { bytes += 4; i++; }
    else bytes += 3;
  }
  return bytes;
}

function sizeOf(data) {
  if (typeof data === "string") return utf8Length(data);
  if (data instanceof Blob) return data.size;
  return data.byteLength || 0;
}

function isText(data) {
  return typeof data === "string";
}

/** A W3C traceparent for a client to read: only the sampled flag bit (Level 1 parsers). */
function formatTraceparent(spanContext) {
  return `00-${spanContext.traceId}-${spanContext.spanId}-${spanContext.traceFlags & 1 ? "01" : "00"}`;
}

function parseTraceparent(value, traceState) {
  if (typeof value !== "string") return null;
  const m = TRACEPARENT.exec(value.trim());
  if (!m || m[1] === "ff" || m[2] === INVALID_TRACE || m[3] === INVALID_SPAN) return null;
  const context = { traceId: m[2], spanId: m[3], traceFlags: parseInt(m[4], 16) & 1, isRemote: true };
  if (typeof traceState === "string" && traceState && config.api && config.api.createTraceState) {
    context.traceState = config.api.createTraceState(traceState);
  }
  return context;
}

function validContext(spanContext) {
  return spanContext && spanContext.traceId !== INVALID_TRACE && spanContext.spanId !== INVALID_SPAN;
}

/** `url.*` / `server.*` attributes of a URL; sensitive query values become REDACTED. */
function urlAttributes(url, scheme) {
  const params = [];
  for (const [name, value] of url.searchParams) {
    const redacted = config.sensitiveQueryParams.has(name.toLowerCase());
    params.push(`${encodeURIComponent(name)}=${redacted ? "REDACTED" : encodeURIComponent(value)}`);
  }
  const query = params.join("&");
  const attributes = {
    "url.scheme": scheme,
    // Rebuilt from host and path so that userinfo (user:password@) is never recorded.
    "url.full": `${scheme}://${url.host}${url.pathname}${query ? `?${query}` : ""}`,
    "url.path": url.pathname,
    "server.address": url.hostname,
  };
  if (url.port) attributes["server.port"] = Number(url.port);
  if (query) attributes["url.query"] = query;
  return attributes;
}

/** The span context a JSON object frame carries: top-level traceparent, or a carrier object. */
function frameContext(data, key) {
  // A substring test first: most frames then skip a JSON parse.
  if (!key || typeof data !== "string" || !data.includes(`"${key}"`)) return null;
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    return null;
  }
  if (!frame || typeof frame !== "object" || Array.isArray(frame)) return null;
  const value = frame[key];
  if (typeof value === "string") return parseTraceparent(value, frame.tracestate);
  if (value && typeof value === "object") {  // a carrier object (the server's other key shape)
    return parseTraceparent(value.traceparent, value.tracestate);
  }
  return null;
}

/** The frame to send: a JSON object text gets the context under `key` (never overriding). */
function injectFrame(data, key, spanContext) {
  if (!key || typeof data !== "string" || data.charCodeAt(0) !== 123 /* { */) return data;
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    return data;
  }
  if (!frame || typeof frame !== "object" || Array.isArray(frame) || key in frame) return data;
  const traceparent = formatTraceparent(spanContext);
  const traceState = spanContext.traceState && spanContext.traceState.serialize();
  if (key === "traceparent") {
    frame.traceparent = traceparent;
    if (traceState && !("tracestate" in frame)) frame.tracestate = traceState;
  } else {
    frame[key] = traceState ? { traceparent, tracestate: traceState } : { traceparent };
  }
  return JSON.stringify(frame);
}

/** Event-handler IDL attributes (onopen, onmessage, ...) on top of addEventListener. */
function defineHandlers(proto, names) {
  for (const name of names) {
    const slot = Symbol(name);
    Object.defineProperty(proto, `on${name}`, {
      configurable: true,
      enumerable: true,
      get() { return this[slot] ? this[slot].handler : null; },
      set(value) {
        const handler = typeof value === "function" ? value : null;
        if (this[slot]) {
          if (handler) { this[slot].handler = handler; return; }
          this.removeEventListener(name, this[slot].listener);
          this[slot] = null;
          return;
        }
        if (!handler) return;
        const entry = { handler, listener: null };
        entry.listener = (event) => {
          if (entry.handler.call(this, event) === false) event.preventDefault();
        };
        this[slot] = entry;
        this.addEventListener(name, entry.listener);
      },
    });
  }
}

function defineStates(cls, names) {
  names.forEach((name, value) => {
    Object.defineProperty(cls, name, { value, enumerable: true });
    Object.defineProperty(cls.prototype, name, { value, enumerable: true });
  });
}

/** Spans of one connection: `connect`, `receive`; common to both classes. */
class Recorder {
  constructor(route, protocol, urlAttrs) {
    this.route = route;
    this.protocol = protocol;
    this.urlAttrs = urlAttrs;
    this.links = [];
    this.openedAt = 0;
  }

  startConnect(attempt, method) {
    const attributes = { ...this.urlAttrs, "network.protocol.name": this.protocol,
      "url.template": this.route };
    if (method) attributes["http.request.method"] = method;
    if (attempt) attributes["http.request.resend_count"] = attempt;
    const { api, tracer } = config;
    return tracer.startSpan(`connect ${this.route}`, { kind: KIND.CLIENT, attributes },
      api.ROOT_CONTEXT);
  }

  opened(span, status) {
    span.setAttribute("http.response.status_code", status);
    span.end();
    const context = span.spanContext();
    this.links = validContext(context) ? [{ context }] : [];
    this.openedAt = performance.now();
  }

  failed(span, errorType, message, status) {
    if (status) span.setAttribute("http.response.status_code", status);
    span.setAttribute("error.type", errorType);
    span.setStatus({ code: STATUS_ERROR, message });
    span.end();
  }

  /** Run `dispatch` inside a CONSUMER `receive` span: child of `remote`, else a new trace. */
  receive(remote, attributes, dispatch) {
    const { api, tracer } = config;
    const parent = remote ? api.trace.setSpanContext(api.ROOT_CONTEXT, remote) : api.ROOT_CONTEXT;
    const span = tracer.startSpan(`receive ${this.route}`, { kind: KIND.CONSUMER, links: this.links },
      parent);
    if (span.isRecording()) {  // attributes only for sampled spans: nothing built otherwise
      span.setAttributes({
        "messaging.operation.name": "receive",
        "messaging.operation.type": "process",  // as on the server: it covers the handling
        "network.protocol.name": this.protocol,
        "url.template": this.route,
        ...attributes(),
      });
    }
    try {
      // Current while the page's listeners run (synchronously), so their spans join.
      return api.context.with(api.trace.setSpan(parent, span), dispatch);
    } finally {
      span.end();
    }
  }
}

// -- WebSocket -------------------------------------------------------------------------------

/**
 * A traced drop-in for the browser's WebSocket.
 *
 * @param {string|URL} url ws(s)://, http(s):// or relative, as the native class takes.
 * @param {string|string[]} [protocols]
 * @param {object} [options]
 * @param {string} [options.route] low-cardinality span name part (default: the URL path).
 * @param {boolean} [options.reconnect] reconnect after an abnormal close (not 1000 / 1005,
 *   nor after close()) or a failed handshake, with capped exponential backoff + full jitter.
 * @param {number} [options.maxRetries] attempts in a row before giving up (default 5).
 * @param {number} [options.backoffBase] ms; attempt n waits uniform(0, min(cap, base * 2**n)).
 * @param {number} [options.backoffCap] ms; the longest single wait.
 * @param {boolean} [options.sendSpans] per-instance override of configure({ sendSpans }).
 * @param {string|null} [options.jsonTraceparentKey] per-instance override.
 * @param {(data: any) => boolean} [options.ignore] frames (either way) to leave untraced, e.g.
 *   keep-alive pings: sent as they are, no span (like the server's IGNORED_FRAMES).
 */
export class TracedWebSocket extends EventTarget {
  constructor(url, protocols, options = {}) {
    super();
    if (protocols && !Array.isArray(protocols) && typeof protocols === "object") {
      options = protocols;  // (url, options): no subprotocols
      protocols = undefined;
    }
    const base = typeof location !== "undefined" ? location.href : undefined;
    let parsed;
    try {
      parsed = new URL(String(url), base);
    } catch {
      throw new DOMException(`The URL '${url}' is invalid.`, "SyntaxError");  // as natively
    }
    if (parsed.protocol === "http:") parsed.protocol = "ws:";
    else if (parsed.protocol === "https:") parsed.protocol = "wss:";
    this._url = parsed;
    this._protocols = protocols;
    this._route = options.route || parsed.pathname;
    this._reconnect = Boolean(options.reconnect);
    this._maxRetries = options.maxRetries ?? 5;
    this._backoffBase = options.backoffBase ?? 500;
    this._backoffCap = options.backoffCap ?? 30000;
    this._sendSpans = options.sendSpans ?? null;
    this._key = options.jsonTraceparentKey !== undefined ? options.jsonTraceparentKey : undefined;
    this._ignore = typeof options.ignore === "function" ? options.ignore : null;
    this._binaryType = "blob";
    this._closing = false;
    this._attempt = 0;
    this._timer = null;
    this._socket = null;
    this._state = TracedWebSocket.CONNECTING;
    /** Reconnections made so far. */
    this.reconnects = 0;
    this._recorder = config.tracer
      ? new Recorder(this._route, "websocket", urlAttributes(parsed, parsed.protocol.slice(0, -1)))
      : null;
    this._open();
  }

  get url() { return this._url.href; }
  get readyState() { return this._socket && this._timer === null ? this._socket.readyState : this._state; }
  get protocol() { return this._socket ? this._socket.protocol : ""; }
  get extensions() { return this._socket ? this._socket.extensions : ""; }
  get bufferedAmount() { return this._socket ? this._socket.bufferedAmount : 0; }
  get binaryType() { return this._binaryType; }
  set binaryType(value) {
    if (value !== "blob" && value !== "arraybuffer") return;  // as the native setter: ignored
    this._binaryType = value;
    if (this._socket) this._socket.binaryType = value;
  }

  _key_() { return this._key !== undefined ? this._key : config.jsonTraceparentKey; }

  _open() {
    this._timer = null;
    this._state = TracedWebSocket.CONNECTING;
    this._framesIn = 0;
    this._framesOut = 0;
    this._wasOpen = false;
    const recorder = config.tracer ? this._recorder : null;
    let target = this._url.href;
    let span = null;
    if (recorder) {
      span = recorder.startConnect(this._attempt);
      const context = span.spanContext();
      if (validContext(context)) {
        // Browsers cannot set WebSocket headers: the server's QUERY_TRACEPARENT reads this.
        const withContext = new URL(this._url.href);
        withContext.searchParams.set("traceparent", formatTraceparent(context));
        target = withContext.href;
      }
    }
    let socket;
    try {
      socket = this._protocols === undefined ? new WebSocket(target)
        : new WebSocket(target, this._protocols);
    } catch (error) {  // a bad URL or subprotocol: the native SyntaxError, span ended
      if (span) recorder.failed(span, error.name || "SyntaxError", String(error.message));
      throw error;
    }
    socket.binaryType = this._binaryType;
    this._socket = socket;
    socket.onopen = () => {
      this._wasOpen = true;
      this._attempt = 0;
      if (span) {
        if (socket.protocol) span.setAttribute("websocket.subprotocol", socket.protocol);
        recorder.opened(span, 101);
        span = null;
      }
      this.dispatchEvent(new Event("open"));
    };
    socket.onmessage = (event) => this._message(event);
    socket.onerror = () => this.dispatchEvent(new Event("error"));
    socket.onclose = (event) => {
      if (span) {  // the handshake never completed
        recorder.failed(span, String(event.code), `handshake failed: close code ${event.code}`);
        span = null;
      } else if (recorder && this._wasOpen) {
        // The server's echo (daphne sends none) or, failing that, the reason the page gave.
        this._disconnected(recorder, event.code, event.reason || this._closeReason || "");
      }
      const retry = this._reconnect && !this._closing && !FINAL_CLOSE.has(event.code)
        && this._attempt < this._maxRetries;
      if (retry) this._state = TracedWebSocket.CLOSED;
      this.dispatchEvent(new CloseEvent("close",
        { code: event.code, reason: event.reason, wasClean: event.wasClean }));
      if (retry && !this._closing) {  // a close listener may have called close()
        const delay = backoffDelay(this._attempt, this._backoffBase, this._backoffCap);
        this._attempt += 1;
        this.reconnects += 1;
        this._timer = setTimeout(() => this._open(), delay);
      }
    };
  }

  _message(event) {
    this._framesIn += 1;
    const data = event.data;
    const init = { data, origin: event.origin, lastEventId: event.lastEventId };
    const recorder = config.tracer ? this._recorder : null;
    if (!recorder || (this._ignore && this._ignore(data))) {
      this.dispatchEvent(new MessageEvent("message", init));
      return;
    }
    const remote = frameContext(data, this._key_());
    recorder.receive(remote, () => ({
      "websocket.message.type": isText(data) ? "text" : "binary",
      "messaging.message.body.size": sizeOf(data),
    }), () => this.dispatchEvent(new MessageEvent("message", init)));
  }

  /**
   * Send a message, as the native send(); a JSON object text gets the `traceparent`.
   * Between a close and a reconnection the socket is CLOSED: the message is dropped, as natively.
   */
  send(data) {
    const socket = this._socket;
    const recorder = config.tracer && socket.readyState === WebSocket.OPEN
      && !(this._ignore && this._ignore(data)) ? this._recorder : null;
    if (!recorder) {
      socket.send(data);
      if (socket.readyState === WebSocket.OPEN) this._framesOut += 1;
      return;
    }
    const { api, tracer } = config;
    const key = this._key_();
    const spans = this._sendSpans ?? config.sendSpans;
    const span = spans ? tracer.startSpan(`send ${this._route}`,
      { kind: KIND.PRODUCER, links: recorder.links }) : null;
    const carrier = span || api.trace.getActiveSpan();
    const context = carrier && carrier.spanContext();
    const frame = validContext(context) ? injectFrame(data, key, context) : data;
    this._framesOut += 1;
    if (carrier && carrier.isRecording()) {
      const attributes = {
        "websocket.message.type": isText(frame) ? "text" : "binary",
        "messaging.message.body.size": sizeOf(frame),
      };
      if (span) {
        span.setAttributes({
          ...attributes,
          "messaging.operation.name": "send",
          "messaging.operation.type": "send",
          "network.protocol.name": "websocket",
          "url.template": this._route,
        });
      } else {
        carrier.addEvent("websocket.send", attributes);
      }
    }
    try {
      socket.send(frame);
    } catch (error) {
      if (span) {
        span.recordException(error);
        span.setAttribute("error.type", error.name || "Error");
        span.setStatus({ code: STATUS_ERROR, message: String(error.message) });
      }
      throw error;
    } finally {
      if (span) span.end();
    }
  }

  /** Close as the native close(code, reason); no reconnection after this. */
  close(code, reason) {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new DOMException(`The close code must be either 1000, or between 3000 and 4999. ${code} is neither.`,
        "InvalidAccessError");
    }
    this._closing = true;
    this._closeReason = reason === undefined ? "" : String(reason);
    if (this._timer !== null) {  // waiting to reconnect: stop, already closed
      clearTimeout(this._timer);
      this._timer = null;
      this._state = TracedWebSocket.CLOSED;
      return;
    }
    if (this._socket) this._socket.close(code, reason);
  }

  _disconnected(recorder, code, reason) {
    const errorType = NORMAL_CLOSE.has(code) ? null : String(code);
    const duration = (performance.now() - recorder.openedAt) / 1000;
    const { api, tracer } = config;
    const span = tracer.startSpan(`disconnect ${this._route}`,
      { kind: KIND.INTERNAL, links: recorder.links }, api.ROOT_CONTEXT);
    if (span.isRecording()) {
      const attributes = {
        "network.protocol.name": "websocket",
        "url.template": this._route,
        "websocket.close.code": code,
        "channels.connection.status": errorType === null ? "closed" : "error",
        "channels.connection.duration": duration,
        "channels.frames.received": this._framesIn,
        "channels.frames.sent": this._framesOut,
      };
      if (reason) attributes["websocket.close.reason"] = reason.slice(0, 123);  // the frame's limit
      if (errorType !== null) attributes["error.type"] = errorType;
      span.setAttributes(attributes);
      if (errorType !== null) span.setStatus({ code: STATUS_ERROR, message: `close code ${code}` });
    }
    span.end();
  }
}
defineStates(TracedWebSocket, ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]);
defineHandlers(TracedWebSocket.prototype, ["open", "message", "error", "close"]);

// -- Server-Sent Events ----------------------------------------------------------------------

/**
 * An incremental WHATWG event-stream parser (sans I/O): feed() decoded text, get events.
 * https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */
export class EventStreamParser {
  constructor(lastEventId = "") {
    this.lastEventId = lastEventId;
    this.retry = null;
    this._buffer = "";
    this._pendingCR = false;
    this._reset();
  }

  _reset() {
    this._data = [];
    this._type = "";
    this._fields = null;
    this._idBuffer = this.lastEventId;
  }

  /** The events the text completes: {type, data, lastEventId, fields}. */
  feed(text) {
    const events = [];
    let buffer = this._buffer + text;
    let start = 0;
    if (this._pendingCR && buffer.charCodeAt(0) === 10) start = 1;  // CRLF split across chunks
    this._pendingCR = false;
    for (let i = start; i < buffer.length; i++) {
      const c = buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = buffer.slice(start, i);
      if (c === 13) {
        if (i + 1 === buffer.length) this._pendingCR = true;
        else if (buffer.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
      const event = this._line(line);
      if (event) events.push(event);
    }
    this._buffer = buffer.slice(start);
    return events;
  }

  _line(line) {
    if (line === "") return this._dispatch();
    if (line.charCodeAt(0) === 58 /* : */) return null;  // a comment (heartbeat)
    const colon = line.indexOf(":");
    let field = line, value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
    }
    switch (field) {
      case "event": this._type = value; break;
      case "data": this._data.push(value); break;
      case "id": if (!value.includes("\0")) this._idBuffer = value; break;
      case "retry": if (/^[0-9]+$/.test(value)) this.retry = Number(value); break;
      default:
        // Unknown fields (traceparent, tracestate) the native EventSource drops: kept here.
        if (!this._fields) this._fields = {};
        this._fields[field] = value;
    }
    return null;
  }

  _dispatch() {
    this.lastEventId = this._idBuffer;
    const data = this._data, type = this._type, fields = this._fields;
    this._reset();
    if (data.length === 0) return null;
    return { type: type || "message", data: data.join("\n"), lastEventId: this.lastEventId,
      fields };
  }
}

/**
 * A traced drop-in for the browser's EventSource. It reads the stream itself (fetch) because
 * the native class hides the `traceparent:` field, and keeps the native behaviour: reconnect
 * after the reconnection time (`retry:` replaces it) sending Last-Event-ID; a response that is
 * not 200 text/event-stream fails the source (error event, CLOSED, no reconnection).
 *
 * @param {string|URL} url
 * @param {{withCredentials?: boolean}} [init]
 * @param {object} [options]
 * @param {string} [options.route] low-cardinality span name part (default: the URL path).
 * @param {number} [options.retry] initial reconnection time in ms (default 3000).
 * @param {number} [options.backoffCap] ms: repeated network failures back off up to this.
 * @param {number|null} [options.maxRetries] reconnections without an event before giving up.
 */
export class TracedEventSource extends EventTarget {
  constructor(url, init = {}, options = {}) {
    super();
    const base = typeof location !== "undefined" ? location.href : undefined;
    this._url = new URL(String(url), base);
    this._withCredentials = Boolean(init && init.withCredentials);
    this._route = options.route || this._url.pathname;
    this._retry = options.retry ?? 3000;
    this._backoffCap = options.backoffCap ?? 30000;
    this._maxRetries = options.maxRetries ?? null;
    this._state = TracedEventSource.CONNECTING;
    this._lastEventId = "";
    this._failures = 0;
    this._attempt = 0;
    this._abort = null;
    this._timer = null;
    /** Reconnections made so far. */
    this.reconnects = 0;
    this._recorder = config.tracer
      ? new Recorder(this._route, "sse", urlAttributes(this._url, this._url.protocol.slice(0, -1)))
      : null;
    // Started in a task, as the native class: listeners added right after construction see open.
    queueMicrotask(() => this._connect());
  }

  get url() { return this._url.href; }
  get withCredentials() { return this._withCredentials; }
  get readyState() { return this._state; }

  close() {
    this._state = TracedEventSource.CLOSED;
    clearTimeout(this._timer);
    if (this._abort) this._abort.abort();
  }

  async _connect() {
    if (this._state === TracedEventSource.CLOSED) return;
    const recorder = config.tracer ? this._recorder : null;
    const headers = { Accept: "text/event-stream" };
    if (this._lastEventId) headers["Last-Event-ID"] = this._lastEventId;
    let span = null;
    if (recorder) {
      span = recorder.startConnect(this._attempt, "GET");
      const context = span.spanContext();
      if (validContext(context)) headers.traceparent = formatTraceparent(context);
    }
    const abort = new AbortController();
    this._abort = abort;
    let response;
    try {
      response = await fetch(this._url.href, {
        headers, cache: "no-store", mode: "cors", signal: abort.signal,
        credentials: this._withCredentials ? "include" : "same-origin",
      });
    } catch (error) {
      if (this._state === TracedEventSource.CLOSED) {  // close() aborted the request
        if (span) span.end();
        return;
      }
      if (span) recorder.failed(span, error.name || "TypeError", String(error.message));
      this._failures += 1;
      this._retryLater(true);
      return;
    }
    const type = (response.headers.get("Content-Type") || "").split(";")[0].trim().toLowerCase();
    if (response.status !== 200 || type !== "text/event-stream") {
      if (span) {
        recorder.failed(span, response.status !== 200 ? String(response.status) : "content_type",
          `status ${response.status}, ${type || "no content type"}`, response.status);
      }
      abort.abort();
      this._fail();
      return;
    }
    if (span) recorder.opened(span, 200);
    if (this._state === TracedEventSource.CLOSED) { abort.abort(); return; }
    this._state = TracedEventSource.OPEN;
    this._attempt = 0;
    this.dispatchEvent(new Event("open"));
    const origin = new URL(response.url || this._url.href).origin;
    const parser = new EventStreamParser(this._lastEventId);
    const decoder = new TextDecoder("utf-8");  // always UTF-8; strips one leading BOM
    const reader = response.body.getReader();
    let events = 0, networkError = false;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
          this._lastEventId = parser.lastEventId;
          events += 1;
          this._event(event, origin);
          if (this._state === TracedEventSource.CLOSED) return;  // a listener closed it
        }
        this._lastEventId = parser.lastEventId;
        if (parser.retry !== null) this._retry = parser.retry;
      }
    } catch {
      networkError = true;
    }
    if (this._state === TracedEventSource.CLOSED) return;
    this._failures = events ? 0 : this._failures + 1;
    this._retryLater(networkError);
  }

  _event(event, origin) {
    const init = { data: event.data, origin, lastEventId: event.lastEventId };
    const recorder = config.tracer ? this._recorder : null;
    if (!recorder) {
      this.dispatchEvent(new MessageEvent(event.type, init));
      return;
    }
    const fields = event.fields;
    const remote = fields ? parseTraceparent(fields.traceparent, fields.tracestate) : null;
    recorder.receive(remote, () => {
      const attributes = { "sse.event.type": event.type,
        "messaging.message.body.size": utf8Length(event.data) };
      if (event.lastEventId) attributes["sse.last_event_id"] = event.lastEventId;
      return attributes;
    }, () => this.dispatchEvent(new MessageEvent(event.type, init)));
  }

  _retryLater(networkError) {
    if (this._state === TracedEventSource.CLOSED) return;
    if (this._maxRetries !== null && this._failures > this._maxRetries) {
      this._fail();
      return;
    }
    this._state = TracedEventSource.CONNECTING;
    this.dispatchEvent(new Event("error"));
    if (this._state === TracedEventSource.CLOSED) return;  // an error listener closed it
    // The reconnection time; repeated network failures back off from it up to the cap.
    const delay = networkError && this._failures > 1
      ? Math.min(this._retry * 2 ** Math.min(this._failures - 1, 30), Math.max(this._retry, this._backoffCap))
      : this._retry;
    this._attempt += 1;
    this.reconnects += 1;
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _fail() {
    this._state = TracedEventSource.CLOSED;
    this.dispatchEvent(new Event("error"));
  }
}
defineStates(TracedEventSource, ["CONNECTING", "OPEN", "CLOSED"]);
defineHandlers(TracedEventSource.prototype, ["open", "message", "error"]);
