"""What :class:`~otel_channels.instrumentation.ChannelsInstrumentor` instruments."""

_instruments = ("channels >= 4.0",)
