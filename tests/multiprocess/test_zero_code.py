"""Zero-code: ``opentelemetry-instrument daphne ...`` finds the ``channels`` entry point.

The workers run with ``OTEL_CHANNELS = {"AUTO_INSTRUMENT": False}``, so the app's
``ready()`` instruments nothing and only the entry point can: ``group_send``
spans, ``process`` spans for the *plain* Channels consumer and route templates
in span names all come from the instrumentor it loads. The SDK is configured by
the distro from the standard ``OTEL_*`` variables (tests/project/otel.py sees a
real provider and stays out of the way).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sys
from pathlib import Path

import httpx
import pytest

from otel_channels.instrumentation import ChannelsInstrumentor
from tests.support.anyserver import new_room
from tests.support.otlp import Span, one_span, wait_spans
from tests.support.workers import (
    CHAT_ROUTE,
    TEMPLATE,
    assert_fanout,
    clients,
    cluster,
    latest,
    wait_metrics,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.redis, pytest.mark.timeout(60)]

ZERO_CODE = ["opentelemetry-instrument"]
NO_AUTO = {
    "OTEL_CHANNELS_JSON": json.dumps({"AUTO_INSTRUMENT": False}),
    # The SDK's process detector puts process.pid on the resource: proves two processes.
    "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel,process",
}


def test_entry_point_and_distro_are_installed() -> None:
    # opentelemetry-instrument needs a distro to configure the SDK from OTEL_* variables.
    assert importlib.metadata.version("opentelemetry-distro")
    assert (Path(sys.executable).parent / "opentelemetry-instrument").exists()
    found = [ep for ep in importlib.metadata.entry_points(group="opentelemetry_instrumentor")
             if ep.name == "channels"]
    assert len(found) == 1, "pip install -e . registers the entry point from pyproject.toml"
    assert found[0].value == "otel_channels.instrumentation:ChannelsInstrumentor"
    assert found[0].load() is ChannelsInstrumentor


async def test_opentelemetry_instrument_traces_fanout_across_workers(redis_url: str) -> None:
    room = new_room()
    with cluster(redis_url, "redis", NO_AUTO, ZERO_CODE) as (receiver, a, b):
        async with clients(a, b, room) as ws:
            await ws["chat_a"].send_json({"text": "zero-code"})
            for client in ws.values():
                assert (await client.receive_json())["text"] == "zero-code", client.name
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(f"{b.url}/broadcast/{room}/", json={"text": "http"})
            assert response.status_code == 202
            for client in ws.values():
                assert (await client.receive_json())["text"] == "http", client.name

            spans = await wait_spans(
                receiver, lambda s: sum(x.name == f"process {TEMPLATE}" for x in s) >= 8)

        receive = one_span(spans, f"receive {CHAT_ROUTE}", "worker-a")  # route template recorded
        producer = one_span(spans, f"group_send {TEMPLATE}", "worker-a")
        assert producer.parent_span_id == receive.span_id
        assert_fanout(spans, producer, f"room_{room}", a, b)
        assert_fanout(spans, one_span(spans, f"group_send {TEMPLATE}", "worker-b"),
                      f"room_{room}", a, b)
        for client in ws.values():
            assert all("_otel" not in raw for raw in client.frames)

        # Metrics too come through the distro's OTLP metric exporter.
        def counted() -> bool:
            for service in ("worker-a", "worker-b"):
                sent = latest(receiver, "messaging.client.sent.messages", service)
                consumed = latest(receiver, "messaging.client.consumed.messages", service)
                if sent is None or sent.value != 1 or consumed is None or consumed.value != 4:
                    return False
            return True

        await wait_metrics(receiver, counted)
        sent = latest(receiver, "messaging.client.sent.messages", "worker-a")
        assert sent is not None and sent.attributes["messaging.destination.template"] == TEMPLATE


async def test_disabled_instrumentations_turns_the_entry_point_off(redis_url: str) -> None:
    room = new_room()
    env = {**NO_AUTO, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "channels"}
    with cluster(redis_url, "redis", env, ZERO_CODE) as (receiver, a, b):
        async with clients(a, b, room) as ws:
            await ws["chat_a"].send_json({"text": "untraced"})
            for client in ws.values():
                received = await client.receive_json()
                assert received["text"] == "untraced", client.name
                assert "_otel" not in received

            def settled(spans: list[Span]) -> bool:
                # The traced consumers still trace themselves: one receive, two process.
                return sum(s.name == "process" for s in spans) >= 2 and any(
                    s.name.startswith("receive ") for s in spans)

            await wait_spans(receiver, settled)
            await asyncio.sleep(0.5)  # five export intervals: a stray group_send would be here
            with receiver.lock:
                spans = list(receiver.spans)

    names = sorted({s.name for s in spans})
    # Nothing instrumented: no producer span, no carrier (so process spans have no group
    # template), no process span for the plain consumer, no route template in names.
    assert not [n for n in names if n.startswith("group_send")], names
    assert f"process {TEMPLATE}" not in names
    assert not [n for n in names if CHAT_ROUTE in n], names
    assert "connect ChatConsumer" in names  # the traced consumer's fallback route name
    processes = [s for s in spans if s.name == "process"]
    assert sorted(s.service for s in processes) == ["worker-a", "worker-b"]
    for span in processes:
        connect_span = one_span(spans, "connect ChatConsumer", span.service)
        assert span.parent_span_id == ""
        assert span.links == [(connect_span.trace_id, connect_span.span_id)]
