"""The consumer side of the layer: one delivered message handled (process) and the
per-message fan-out record shared by a worker's deliveries (fanout).

Imports layer and telemetry; the WebSocket and SSE handlers import it.
"""
