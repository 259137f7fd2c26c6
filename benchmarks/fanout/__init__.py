"""The fan-out benchmarks: small programs by job, sharing the variants and the helpers.

* ``python -m benchmarks.fanout`` (:mod:`.__main__`): the network run, two daphne
  workers on Redis and N WebSocket clients; with ``--scale`` (:mod:`.scale`) by client
  count, with ``--profile`` (:mod:`.profiling`) under py-spy, with ``--inproc``
  (:mod:`.inproc`) in one process per variant;
* ``python -m benchmarks.fanout.instructions VARIANT`` (:mod:`.instructions`): one
  variant's in-process fan-out, what ``benchmarks/fanout_instructions.sh`` counts under
  callgrind and the child of ``--inproc``;
* :mod:`.variants` (the worker configurations by name), :mod:`.common` (paths, CPU from
  ``/proc``, medians, the source fingerprint), :mod:`.run` (one network run: workers,
  clients, OTLP sink, results), :mod:`.report` (its tables).

Workers, free ports and Redis key clean-up come from the tests' helpers
(``tests/support/servers.py``, ``tests/support/redis_layer.py``).
"""
