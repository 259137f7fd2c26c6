"""What the tests need on older Pythons and Djangos: ``asyncio.timeout`` on Python 3.10
(added to asyncio in 3.11), and a skip for what needs Django 5.0's SSE disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import django
import pytest

#: Django 4.2's ASGI handler does not listen for ``http.disconnect`` while it streams a
#: response, so an SSE stream whose client left lives on (docs/sse.md).
needs_sse_disconnects = pytest.mark.skipif(
    django.VERSION < (5, 0),
    reason="Django 4.2 does not see SSE disconnects while streaming (docs/sse.md)")

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:

    @contextlib.asynccontextmanager
    async def timeout(delay: float) -> AsyncIterator[None]:
        """Cancel the body after ``delay`` seconds and raise ``TimeoutError``."""
        task = asyncio.current_task()
        assert task is not None
        fired = False

        def expire() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_later(delay, expire)
        try:
            yield
        except asyncio.CancelledError:
            if fired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()

__all__ = ["needs_sse_disconnects", "timeout"]
