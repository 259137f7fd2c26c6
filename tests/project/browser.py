"""``/_browser/``: a page for the browser-module tests, the module and the web SDK bundle.

The module is read from the app's static files (where ``collectstatic`` finds it);
the OpenTelemetry JS web SDK is the bundle the example vendors. Served by the
worker itself so that the page, its WebSocket and its event stream share one origin.
"""

from __future__ import annotations

from pathlib import Path

from django.apps import apps
from django.http import Http404, HttpRequest, HttpResponse

_EXAMPLE_STATIC = Path(__file__).resolve().parents[2] / "example_project" / "chat" / "static"

#: The page's set-up: the web SDK exporting to ``?otlp=`` as ``?service=``, the module
#: configured with its api (``?tracing=0``: the SDK is registered globally, the module is
#: not given the api; no ``otlp``: no SDK at all).
SETUP = """
import * as sdk from "/_browser/opentelemetry-web.js";
import * as traced from "/_browser/otel-channels.js";
const params = new URLSearchParams(location.search);
const otlp = params.get("otlp");
if (otlp) {
  const provider = new sdk.WebTracerProvider({
    resource: sdk.defaultResource().merge(
      sdk.resourceFromAttributes({ [sdk.ATTR_SERVICE_NAME]: params.get("service") })),
    spanProcessors: [new sdk.BatchSpanProcessor(
      new sdk.OTLPTraceExporter({ url: `${otlp}/v1/traces` }),
      { scheduledDelayMillis: 100, maxQueueSize: 4096, maxExportBatchSize: 256 })],
  });
  provider.register();  // W3C propagator, stack context manager
  window.provider = provider;
  if (params.get("tracing") !== "0") traced.configure({ api: sdk.api });
}
window.sdk = sdk;
window.traced = traced;
window.ready = true;
"""


def _files() -> dict[str, Path]:
    static = Path(apps.get_app_config("otel_channels").path) / "static"
    return {
        "otel-channels.js": static / "otel_channels" / "otel-channels.js",
        "opentelemetry-web.js": _EXAMPLE_STATIC / "chat" / "vendor" / "opentelemetry-web.js",
    }


def serve(request: HttpRequest, name: str) -> HttpResponse:
    if name == "page.html":
        return HttpResponse(
            '<!doctype html><meta charset="utf-8"><title>browser module</title>'
            '<link rel="icon" href="data:,">'
            f'<script type="module">{SETUP}</script>', content_type="text/html; charset=utf-8")
    path = _files().get(name)
    if path is None:
        raise Http404(name)
    return HttpResponse(path.read_bytes(), content_type="text/javascript; charset=utf-8")
