/* The pages' tracing: the OpenTelemetry JS web SDK (vendored bundle) and the app's browser module.
 *
 * Spans go to this worker's /otlp/v1/traces (same origin: no CORS), which hands them to the
 * server's SDK: the live trace view draws them next to the server's spans of the same trace.
 * The service name says which page and which worker served it: "room@chat-8000".
 */
import * as sdk from "./vendor/opentelemetry-web.js";
import { configure, TracedEventSource, TracedWebSocket } from "../otel_channels/otel-channels.js";

export function startTracing(page) {
  const badge = document.querySelector(".worker-badge");
  const provider = new sdk.WebTracerProvider({
    resource: sdk.defaultResource().merge(sdk.resourceFromAttributes({
      [sdk.ATTR_SERVICE_NAME]: `${page}@${badge ? badge.dataset.worker : location.host}`,
    })),  // telemetry.sdk.* of the JS SDK: the server tells the pages' spans by them
    spanProcessors: [new sdk.BatchSpanProcessor(
      new sdk.OTLPTraceExporter({ url: new URL("/otlp/v1/traces", location.href).href }),
      { scheduledDelayMillis: 250 })],
  });
  provider.register();
  configure({ api: sdk.api });
  addEventListener("pagehide", () => provider.forceFlush());
  return provider;
}

export { TracedEventSource, TracedWebSocket };
