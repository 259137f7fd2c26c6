"""The channel layer, patched: the producer side (send / group_send, capacity, payload
checks), ``receive`` without the carrier, group memberships and group subscriptions.

Imports telemetry only: the producer side never imports the consumer side.
"""
