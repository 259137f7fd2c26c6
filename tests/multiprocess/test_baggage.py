"""W3C baggage through Channels, with the global propagator (default: tracecontext,baggage).

* ``baggage.set_baggage("tenant", "acme")`` attached around a ``group_send`` on
  worker A: the handler of that broadcast sees ``tenant=acme`` on both workers,
  in traced and plain consumers alike, and a later broadcast without baggage
  sees none (nothing sticks to the connection);
* a ``baggage: tenant=acme`` header on the WebSocket handshake is in the context
  of ``connect()`` and ``receive_json()``.

The consumers (tests/project/consumers.py, ``/ws/baggage/`` and
``/ws/baggage-plain/``) echo ``opentelemetry.baggage.get_baggage("tenant")``
into the frames they send.
"""

from __future__ import annotations

import pytest

from tests.support.anyserver import new_room
from tests.support.otlp import OTLPReceiver
from tests.support.servers import DaphneWorker, running, two_workers
from tests.support.websocket import open_clients

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(60)]


@pytest.mark.redis
async def test_baggage_set_before_group_send_reaches_handlers_on_both_workers(
    redis_url: str,
) -> None:
    room = new_room()
    with two_workers(redis_url, "redis", "otelbag", join_timeout=40) as (_receiver, a, b):
        urls = {
            "traced_a": f"{a.ws_url}/ws/baggage/{room}/",
            "plain_a": f"{a.ws_url}/ws/baggage-plain/{room}/",
            "traced_b": f"{b.ws_url}/ws/baggage/{room}/",
            "plain_b": f"{b.ws_url}/ws/baggage-plain/{room}/",
        }
        async with open_clients(urls) as ws:
            await ws["traced_a"].send_json({"text": "with", "tenant": "acme"})
            got = {name: await client.receive_json() for name, client in ws.items()}
            await ws["traced_a"].send_json({"text": "without"})  # no baggage this time
            later = {name: await client.receive_json() for name, client in ws.items()}
        leaks = {name: client.leaked() for name, client in ws.items() if client.leaked()}
    assert got == dict.fromkeys(
        urls, {"type": "chat.message", "text": "with", "tenant": "acme"}), got
    assert later == dict.fromkeys(
        urls, {"type": "chat.message", "text": "without", "tenant": None}), later
    assert not leaks, leaks


async def test_handshake_baggage_header_reaches_connect_and_receive() -> None:
    room = new_room()
    with OTLPReceiver() as receiver, running(
            DaphneWorker(receiver.env(), name="baggage-handshake"), join_timeout=40) as (worker,):
        url = f"{worker.ws_url}/ws/baggage/{room}/"
        async with open_clients({"with": url}, headers={"baggage": "tenant=acme"},
                                settle_time=0) as ws:
            await ws["with"].send_json({"echo": True})
            with_header = await ws["with"].receive_json()
        async with open_clients({"without": url}, settle_time=0) as ws:
            await ws["without"].send_json({"echo": True})
            without_header = await ws["without"].receive_json()
    assert without_header == {"connect": None, "receive": None}
    assert with_header == {"connect": "acme", "receive": "acme"}
