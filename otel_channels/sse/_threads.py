"""An open event stream holds no OS thread: the request's executor thread is given back.

Django's ``ASGIHandler.__call__`` serves every request inside its own asgiref
``ThreadSensitiveContext``. The first thread-sensitive ``sync_to_async`` call of
the request creates a one-thread ``ThreadPoolExecutor`` for that context
(``SyncToAsync.context_to_thread_executor``), so that all sync code of one
request runs on one thread, and the context shuts it down only when it exits,
after the response's last byte. For an event stream that is hours, and the first
such call always comes before the view: ``ASGIHandler.handle`` sends
``request_started`` with ``asend()``, which runs its sync receivers
(``close_old_connections``, ``reset_queries``) through ``sync_to_async``; every
sync hook of a ``MiddlewareMixin`` middleware (``__acall__``), a sync view and
``response.render`` follow. After the headers, Django makes no thread-sensitive
call until the stream ends (``response.close()``, or ``request_finished.asend()``
when the client went away), and the stream itself makes none (the hub, the
replay log and the writer are async).

So when the stream starts, :func:`release_request_thread` closes the database
connections the request opened on that thread (as ``request_finished`` would at
the end: the thread is about to go, and a stream must not hold a database
connection for its life) and shuts the executor down without waiting: its idle
thread exits. The stream's end gets a fresh executor thread for ``close()`` and
``request_finished``, which Django's context then joins, as for any request.
Nothing changes for the view, its ``get_groups`` or the middleware: all of that
ran before, on the request's thread. (The alternative, an ASGI entry point that
serves streams outside a per-request context, would send their sync code to one
thread shared by the process and needs a routing change in every project;
docs/design.md.)
"""

from __future__ import annotations

from asgiref.sync import SyncToAsync
from django.db import connections

__all__ = ["release_request_thread"]


def release_request_thread() -> bool:
    """Shut down the current request's thread-sensitive executor; True if there was one.

    A context given an executor by its caller (asgiref's ``executor=`` argument)
    is left alone, as is a request run under ``async_to_sync`` (its sync code
    goes to the calling thread, there is no executor of its own).
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None or getattr(context, "_executor", None) is not None:
        return False
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is None:
        return False
    executor.submit(connections.close_all)  # on the thread that opened them
    executor.shutdown(wait=False)  # the thread exits once the queue is drained
    return True
