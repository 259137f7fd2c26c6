"""The daphne worker of ``benchmarks/connections.py`` (idle connections per worker)."""
