"""A worker project for the property-based, membership and persistence tests.

``tests/project`` plus one WebSocket route per consumer kind (the four traced
classes and a plain Channels JSON consumer), all joining ``fuzz_<room>`` and
forwarding every ``fuzz.message`` event losslessly to their client, an SSE
view on the same group and a broadcast endpoint for storms.
"""
