"""Shared telemetry: names and values (semconv), route and group templates (names), the
trace carrier, sampling and rates, the instruments, and the one span builder.

Imports no other role package (docs/design.md, "The house"); the clients use its
Django-free modules (semconv, names, carrier, wire).
"""
