// A Node WebSocket client built only from public packages (ws and the OpenTelemetry JS
// API/SDK, as js/package-lock.json pins them), written the way a JavaScript team would
// follow docs/clients.md "Non-Python clients" (issue 18's check "from outside"):
//
//   node tests/clients/node_client.mjs '{"otlp": "http://127.0.0.1:PORT", "frames": [...]}'
//
// Each frame {"style": "top" | "carrier" | "go", "url": "ws://...", "baggage": {...}}:
// one connection, a PRODUCER span "send <route>" around the frame, the frame sent with the
// span's context (and the baggage) injected by the global propagator, the first reply read,
// its context extracted with the same propagator, and a CONSUMER span "receive <route>"
// started under it. Styles:
//
// * top: propagation.inject into a plain object, copied to the frame's top level
//   (JSON_TRACEPARENT_KEY = "traceparent", the default);
// * carrier: the filled object under "otel" (JSON_TRACEPARENT_KEY = "otel");
// * go: the design guide's TracedMessage {action, data, trace_id, span_id, trace_flags},
//   the map under "trace_flags" (JSON_TRACEPARENT_KEY = "trace_flags").
//
// The spans go to the OTLP/HTTP (JSON) endpoint given; stdout gets one JSON object with,
// per frame, what was sent, the span's ids, the reply and the context extracted from it.
// Every wait is bounded (10 s per step).
import { createRequire } from "node:module";

// The packages live in js/node_modules (npm ci there); OTEL_CHANNELS_JS may point elsewhere.
const js = process.env.OTEL_CHANNELS_JS || new URL("../../js/", import.meta.url).pathname;
const require = createRequire(js.endsWith("/") ? `${js}package.json` : `${js}/package.json`);
const { ROOT_CONTEXT, SpanKind, propagation, trace } = require("@opentelemetry/api");
const { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } =
  require("@opentelemetry/core");
const { BasicTracerProvider, SimpleSpanProcessor } = require("@opentelemetry/sdk-trace-base");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-http");
const { resourceFromAttributes } = require("@opentelemetry/resources");
const WebSocket = require("ws");

const STEP_MS = 10000;
const ROUTE = "/ws/baggage/<room>/";
const KEYS = { top: null, carrier: "otel", go: "trace_flags" };

const config = JSON.parse(process.argv[2]);
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ "service.name": "node-client" }),
  spanProcessors: [new SimpleSpanProcessor(
    new OTLPTraceExporter({ url: `${config.otlp}/v1/traces` }))],
});
trace.setGlobalTracerProvider(provider);
propagation.setGlobalPropagator(new CompositePropagator({
  propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
}));
const tracer = trace.getTracer("node-client");

function bounded(promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), STEP_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

function buildFrame(style, ctx, span) {
  const carrier = {};
  propagation.inject(ctx, carrier);  // traceparent, (tracestate,) baggage
  if (style === "top") return { echo: true, ...carrier };
  if (style === "carrier") return { echo: true, type: "chat", text: "hi", otel: carrier };
  const sc = span.spanContext();  // the guide's TracedMessage, in its field order
  return { action: "chat", data: { text: "hi" }, trace_id: sc.traceId, span_id: sc.spanId,
           trace_flags: carrier };
}

async function one({ style, url, baggage }) {
  const ws = new WebSocket(url);
  const replies = [];
  let wake = null;
  ws.on("message", (data) => { replies.push(data.toString()); if (wake) wake(); });
  await bounded(new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  }), `open ${url}`);

  let ctx = ROOT_CONTEXT;
  if (baggage) {
    const entries = Object.fromEntries(Object.entries(baggage).map(([k, v]) => [k, { value: v }]));
    ctx = propagation.setBaggage(ctx, propagation.createBaggage(entries));
  }
  const span = tracer.startSpan(`send ${ROUTE}`, { kind: SpanKind.PRODUCER }, ctx);
  const frame = buildFrame(style, trace.setSpan(ctx, span), span);
  ws.send(JSON.stringify(frame));
  span.end();

  if (!replies.length) {
    await bounded(new Promise((resolve) => { wake = resolve; }), `reply from ${url}`);
  }
  const reply = JSON.parse(replies[0]);
  const key = KEYS[style];
  const parent = propagation.extract(ROOT_CONTEXT, key === null ? reply : (reply[key] ?? {}));
  const extracted = trace.getSpanContext(parent) ?? null;
  const received = tracer.startSpan(`receive ${ROUTE}`, { kind: SpanKind.CONSUMER }, parent);
  received.end();

  ws.close(1000);
  await bounded(new Promise((resolve) => ws.once("close", resolve)), `close ${url}`);
  const sent = span.spanContext();
  return {
    style, frame, reply,
    send: { traceId: sent.traceId, spanId: sent.spanId, traceFlags: sent.traceFlags },
    receive: { traceId: received.spanContext().traceId, spanId: received.spanContext().spanId },
    extracted: extracted && { traceId: extracted.traceId, spanId: extracted.spanId,
                              traceFlags: extracted.traceFlags, isRemote: extracted.isRemote },
  };
}

const results = [];
for (const item of config.frames) results.push(await one(item));
await bounded(provider.forceFlush(), "span export");
await provider.shutdown();
process.stdout.write(`${JSON.stringify({ frames: results })}\n`);
