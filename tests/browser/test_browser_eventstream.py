"""The browser module's event-stream parser reads streams as the Python one does.

``TracedEventSource`` parses the stream itself (the native EventSource hides
``traceparent:``); its ``EventStreamParser`` is fed the same chunks as
``otel_channels.eventstream.EventStreamParser`` under Node, and both must give
the same events: type, data, last event id, the non-standard fields, retry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from otel_channels.eventstream import EventStreamParser

MODULE = (Path(__file__).resolve().parents[2] / "otel_channels" / "static" / "otel_channels"
          / "otel-channels.js")

CASES: list[list[str]] = [
    ["data: hello\n\n"],
    ["event: chat.message\nid: 1-0\ndata: {\"a\": 1}\ntraceparent: 00-"
     "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n\n"],
    ["data: one\r\ndata: two\r\n\r\n", "data:no space\r\r"],  # CRLF, CR
    ["data: split\r", "\n\r", "\n"],  # CRLF across chunks
    ["\ufeffdata: bom\n\n"],  # one leading BOM stripped
    [": heartbeat\n\n", "id: 7\n\n", "data: after id only\n\n"],  # id kept without data
    ["id: a\u0000b\ndata: nul id ignored\n\n"],
    ["retry: 1500\ndata: r\n\n", "retry: 15x\ndata: bad retry\n\n"],
    ["data\n\n", "data:\n\n", "event\ndata: x\n\n"],  # fields without a colon
    ["data: incomplete at the end"],  # dropped
    ["da", "ta: chunked", " in the middle\n", "\n"],
    ["event: a\ndata: 1\nevent: b\n\n"],  # the last event name wins
]

NODE_SCRIPT = """
import { EventStreamParser } from %s;
const cases = JSON.parse(process.argv[1]);
const out = cases.map((chunks) => {
  const parser = new EventStreamParser("");
  const events = [];
  for (const chunk of chunks) {
    // TextDecoder strips one leading BOM, as the module's stream reading does.
    for (const e of parser.feed(chunk)) events.push(e);
  }
  return { events, retry: parser.retry, last: parser.lastEventId };
});
console.log(JSON.stringify(out));
"""


def python_events(chunks: list[str]) -> dict[str, Any]:
    parser = EventStreamParser()
    events = []
    for chunk in chunks:
        for event in parser.feed(chunk.encode("utf-8")):
            events.append({"type": event.type, "data": event.data, "lastEventId": event.id,
                           "fields": dict(event.fields) if event.fields else None})
    return {"events": events, "retry": parser.retry, "last": parser.last_event_id}


def test_same_events_as_the_python_parser() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but node is missing")
        pytest.skip("needs node")
    # The BOM is the decoder's job in the browser (TextDecoder); Python's parser strips it.
    js_cases = [[c.removeprefix("\ufeff") if i == 0 else c for i, c in enumerate(chunks)]
                for chunks in CASES]
    result = subprocess.run(
        [node, "--input-type=module", "-e", NODE_SCRIPT % json.dumps(MODULE.as_uri()),
         json.dumps(js_cases)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    got = json.loads(result.stdout)
    for chunks, js in zip(CASES, got, strict=True):
        assert js == python_events(chunks), chunks
