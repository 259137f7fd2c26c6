"""The Django app: registers the system checks and instruments Channels."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class OtelChannelsConfig(AppConfig):
    name = "otel_channels"
    verbose_name = "OpenTelemetry for Channels"
    default = True

    def ready(self) -> None:
        from .checks import check_channel_layers, check_settings
        from .conf import get_config

        checks.register(check_settings, "otel_channels")
        checks.register(check_channel_layers, "otel_channels")
        if get_config().AUTO_INSTRUMENT:
            from .instrumentation import ChannelsInstrumentor

            instrumentor = ChannelsInstrumentor()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument()
