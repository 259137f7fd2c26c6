"""The worker project of ``benchmarks/fanout.py`` (separate from ``tests.project``)."""
