"""The worker project of ``benchmarks/fanout/`` (separate from ``tests.project``)."""
