"""The fan-out span budget: O(1) ``process`` spans per broadcast per worker, errors never hidden.

In one process on the in-memory layer: N traced consumers in one group, one
``group_send`` from inside a span. With ``MAX_PROCESS_SPANS_PER_BROADCAST``
at B, the first B deliveries are ``process`` spans and the rest are tallied in
one ``deliver {group}`` summary span written by the per-process flush timer
once the broadcast is quiet; a delivery that raises or is slow past the
budget still gets its span, after the fact, with real times.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import pytest
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.urls import path
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_channels.consumers import TracedAsyncJsonWebsocketConsumer
from otel_channels.delivery import fanout as _fanout
from tests.support.telemetry import Metrics, Spans
from tests.support.websocket import connected

TEMPLATE = "fan_{id}"
PROCESS = f"process {TEMPLATE}"
DELIVER = f"deliver {TEMPLATE}"
tracer = trace.get_tracer("tests.fanout")


class Member(TracedAsyncJsonWebsocketConsumer):
    """Joins the group in the URL; ``fan.message`` is forwarded, or raises / sleeps on cue."""

    async def connect(self) -> None:
        self.group = self.scope["url_route"]["kwargs"]["group"]
        self.index = int(self.scope["url_route"]["kwargs"]["index"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def fan_message(self, event: dict[str, Any]) -> None:
        if self.index in event.get("fail", ()):
            raise RuntimeError(f"member {self.index} failed")
        if self.index in event.get("slow", ()):
            await asyncio.sleep(0.12)
        await self.send_json(event)


APP = URLRouter([path("fan/<str:group>/<int:index>/", Member.as_asgi())])


@asynccontextmanager
async def members(count: int) -> AsyncIterator[tuple[str, list[WebsocketCommunicator]]]:
    group = f"fan_{uuid.uuid4().int % 10**12}"
    async with connected([WebsocketCommunicator(APP, f"/fan/{group}/{i}/")
                          for i in range(count)]) as comms:
        yield group, comms


async def broadcast(group: str, **fields: Any) -> None:
    with tracer.start_as_current_span("origin"):
        await get_channel_layer().group_send(group, {"type": "fan.message", **fields})


async def receive_all(comms: list[WebsocketCommunicator], skip: frozenset[int] = frozenset()
                      ) -> list[dict[str, Any]]:
    received = []
    for index, comm in enumerate(comms):
        if index not in skip:
            received.append(await comm.receive_json_from(timeout=5))
    return received


async def wait_for(spans: Spans, name: str, count: int, timeout: float = 3.0) -> list[ReadableSpan]:
    """Spans named ``name`` once there are ``count`` (the summary comes from a timer)."""
    for _ in range(int(timeout / 0.05)):  # polled: the spans arrive from another path
        if len(spans.named(name)) >= count:
            break
        await asyncio.sleep(0.05)
    return spans.named(name)


def budget(value: int | None, **more: Any) -> Any:
    return override_settings(OTEL_CHANNELS={"MAX_PROCESS_SPANS_PER_BROADCAST": value, **more})


async def test_budget_gives_n_process_spans_and_one_summary(spans: Spans,
                                                            metric_reader: Metrics) -> None:
    with budget(4):
        async with members(11) as (group, comms):
            await broadcast(group, text="hi")
            received = await receive_all(comms)
            assert received == [{"type": "fan.message", "text": "hi"}] * 11  # no carrier
            (summary,) = await wait_for(spans, DELIVER, 1)
    (producer,) = spans.named(f"group_send {TEMPLATE}")
    processes = spans.named(PROCESS)
    assert len(processes) == 4
    for span in [*processes, summary]:
        assert span.kind is SpanKind.CONSUMER
        assert span.parent is not None and span.parent.span_id == producer.context.span_id
        assert producer.context.span_id not in [link.context.span_id for link in span.links]
        assert span.attributes["messaging.destination.name"] == group
        assert span.attributes["messaging.destination.template"] == TEMPLATE
    assert summary.attributes["messaging.operation.name"] == "deliver"
    assert summary.attributes["messaging.batch.message_count"] == 11
    assert summary.attributes["channels.deliveries.recorded"] == 4
    assert summary.attributes["channels.deliveries.unrecorded"] == 7
    assert summary.attributes["channels.deliveries.failed"] == 0
    assert summary.attributes["channels.deliveries.slow"] == 0
    assert summary.attributes["channels.deliveries.duration.max"] > 0
    assert summary.links == ()  # a child of the producer; no one connection's summary
    assert summary.start_time <= min(s.start_time for s in processes)
    assert summary.end_time >= max(s.end_time for s in processes)
    # Every delivery counted; duration histograms: one point for the message on this worker.
    attrs = {"messaging__destination__template": TEMPLATE}
    assert metric_reader.sum("messaging.client.consumed.messages", **attrs) == 11
    assert metric_reader.count("messaging.process.duration", **attrs) == 1
    assert metric_reader.count("channels.message.delivery.duration", **attrs) == 1


@pytest.mark.parametrize("limit", [0, 3, None])
async def test_every_failure_is_an_error_span_whatever_the_budget(spans: Spans,
                                                                  limit: int | None) -> None:
    failing = [0, 7, 14]  # one inside any budget, two past a small one
    with budget(limit):
        async with members(16) as (group, comms):
            await broadcast(group, fail=failing)
            await receive_all(comms, skip=frozenset(failing))
            for index in failing:
                with pytest.raises(RuntimeError, match=f"member {index} failed"):
                    await comms[index].wait(timeout=5)
            if limit is not None:
                (summary,) = await wait_for(spans, DELIVER, 1)
                assert summary.attributes["channels.deliveries.failed"] == 3
                assert summary.attributes["messaging.batch.message_count"] == 16
    errors = [s for s in spans.named(PROCESS) if s.status.status_code is StatusCode.ERROR]
    assert len(errors) == 3
    for span in errors:
        assert span.attributes["error.type"] == "RuntimeError"
        assert [event.name for event in span.events] == ["exception"]
        assert span.end_time > span.start_time  # real times, not an instant
    # Budget 3: members 0-2 (0 fails inside it), then the two failures past it.
    assert len(spans.named(PROCESS)) == {0: 3, 3: 5, None: 16}[limit]
    if limit is None:
        assert spans.named(DELIVER) == []  # every delivery is a span: nothing to summarize


async def test_slow_delivery_past_the_budget_becomes_a_span(spans: Spans) -> None:
    with budget(0, SLOW_PROCESS_THRESHOLD=0.05):
        async with members(5) as (group, comms):
            started = time.time_ns()
            await broadcast(group, slow=[3])
            await receive_all(comms)
            (summary,) = await wait_for(spans, DELIVER, 1)
    (slow,) = spans.named(PROCESS)
    assert slow.attributes["channels.delivery.slow"] is True
    assert slow.end_time - slow.start_time >= 0.1e9  # the handler's real duration
    assert slow.start_time >= started
    assert slow.status.status_code is StatusCode.UNSET
    assert summary.attributes["channels.deliveries.slow"] == 1
    assert summary.attributes["channels.deliveries.unrecorded"] == 4
    assert summary.attributes["channels.deliveries.duration.max"] >= 0.1


async def test_no_budget_is_a_span_per_delivery_and_no_summary(spans: Spans) -> None:
    with budget(None):
        async with members(12) as (group, comms):
            await broadcast(group)
            await receive_all(comms)
            await asyncio.sleep(_fanout.QUIET_SECONDS * 2)
    assert len(spans.named(PROCESS)) == 12
    assert spans.named(DELIVER) == []


@pytest.mark.parametrize("limit", [0, 2, None])
async def test_histograms_do_not_depend_on_the_budget(metric_reader: Metrics,
                                                      limit: int | None) -> None:
    with budget(limit):
        async with members(6) as (group, comms):
            for _ in range(3):
                await broadcast(group)
                await receive_all(comms)
    attrs = {"messaging__destination__template": TEMPLATE}
    assert metric_reader.sum("messaging.client.consumed.messages", **attrs) == 18
    assert metric_reader.count("messaging.process.duration", **attrs) == 3
    assert metric_reader.count("channels.message.delivery.duration", **attrs) == 3


async def test_unsampled_broadcast_is_counted_and_untraced(spans: Spans,
                                                           metric_reader: Metrics) -> None:
    with budget(2, MESSAGE_SAMPLE_RATE=0.0):
        async with members(5) as (group, comms):
            await get_channel_layer().group_send(group, {"type": "fan.message"})
            await receive_all(comms)
            await asyncio.sleep(_fanout.QUIET_SECONDS * 2)
    # Lifecycle spans are the SDK sampler's; no message span, no summary.
    assert [n for n in spans.names() if not n.startswith(("connect", "disconnect"))] == []
    attrs = {"messaging__destination__template": TEMPLATE}
    assert metric_reader.sum("messaging.client.consumed.messages", **attrs) == 5
    assert metric_reader.count("messaging.process.duration", **attrs) == 0


async def test_records_are_bounded_and_evicted_ones_are_summarized(spans: Spans) -> None:
    with budget(0), mock.patch.object(_fanout, "MAX_RECORDS", 3):
        async with members(2) as (group, comms):
            for _ in range(5):
                await broadcast(group)
                await receive_all(comms)
            assert len(_fanout.TABLE.records) <= 3
            summaries = await wait_for(spans, DELIVER, 5)
    assert len(summaries) == 5  # two written at eviction, three by the timer
    assert {s.attributes["messaging.batch.message_count"] for s in summaries} == {2}
    assert len({s.parent.span_id for s in summaries if s.parent}) == 5  # one per broadcast
