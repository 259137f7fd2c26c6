"""Traced WebSocket consumers: the mixin, the per-connection state (connection), frame
decisions (frames), server quirks about close codes (asgi).

Imports delivery, layer and telemetry.
"""
