"""Metric points in the OTLP receiver: the latest of a stream, active connections.
"""

from __future__ import annotations

from typing import Any

from tests.support.otlp import MetricPoint, OTLPReceiver

# -- metrics in the receiver --------------------------------------------------------


def latest(receiver: OTLPReceiver, name: str, service: str, **attributes: Any
           ) -> MetricPoint | None:
    """The most recent exported point of one metric stream of one worker."""
    with receiver.lock:
        points = [p for p in receiver.metrics if p.name == name and p.service == service
                  and all(p.attributes.get(k) == v for k, v in attributes.items())]
    return points[-1] if points else None


def latest_by_attributes(receiver: OTLPReceiver, name: str, service: str
                         ) -> dict[tuple[tuple[str, Any], ...], MetricPoint]:
    """The most recent point of every attribute set of one metric of one worker."""
    found: dict[tuple[tuple[str, Any], ...], MetricPoint] = {}
    with receiver.lock:
        for point in receiver.metrics:
            if point.name == name and point.service == service:
                found[tuple(sorted(point.attributes.items()))] = point
    return found



def active_connections(receiver: OTLPReceiver, service: str, protocol: str) -> float | None:
    """Latest cumulative active-connection count of one worker and protocol (all routes)."""
    points = [p for p in latest_by_attributes(
        receiver, "channels.server.active_connections", service).values()
        if p.attributes.get("network.protocol.name") == protocol]
    return sum(p.value or 0.0 for p in points) if points else None


def sum_metric(receiver: OTLPReceiver, name: str, service: str, **attributes: Any) -> float:
    """Sum over attribute sets of the latest cumulative value of one metric of one worker."""
    total = 0.0
    for point in latest_by_attributes(receiver, name, service).values():
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            total += point.value or 0.0
    return total


