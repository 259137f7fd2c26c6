// The OpenTelemetry JS web SDK as one ES module, for pages that load scripts without a build
// step (the example's pages and the browser tests). build_browser_sdk.mjs bundles it.
export * as api from "@opentelemetry/api";
export { StackContextManager, WebTracerProvider } from "@opentelemetry/sdk-trace-web";
export {
  AlwaysOnSampler,
  BatchSpanProcessor,
  InMemorySpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace-base";
export { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
export { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
export { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
