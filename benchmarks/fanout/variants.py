"""The configurations of the fan-out workers, by name (every fan-out program shares them).

A variant is a set of ``FANOUT_*`` variables read by ``benchmarks/_fanout_app``
(the workers of the network run, the consumers of the in-process child).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One configuration of the workers."""

    name: str
    label: str
    env: dict[str, str]


_TRACED = {"FANOUT_CONSUMER": "traced", "FANOUT_APP": "1"}
_SDK = {**_TRACED, "FANOUT_SDK": "1"}

VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("plain", "plain Channels", {"FANOUT_CONSUMER": "plain"}),
    Variant("otel-default", "otel_channels, default settings", {**_SDK, "FANOUT_RATE": "1.0"}),
    Variant("otel-every", "otel_channels, every delivery a span", {
        **_SDK, "FANOUT_RATE": "1.0", "FANOUT_BUDGET": "none"}),
    Variant("otel-0.01", "otel_channels, rate 0.01", {**_SDK, "FANOUT_RATE": "0.01"}),
    Variant("otel-nosdk", "otel_channels, no SDK", {**_TRACED, "FANOUT_RATE": "1.0"}),
    Variant("asgi-mw", "plain + OTel ASGI middleware", {
        "FANOUT_CONSUMER": "plain", "FANOUT_SDK": "1", "FANOUT_ASGI_MW": "1"}),
    Variant("otel-unsampled", "otel_channels, SDK, rate 0 (nothing sampled)", {
        **_SDK, "FANOUT_RATE": "0.0"}),
    Variant("otel-budget0", "otel_channels, rate 1.0, budget 0", {
        **_SDK, "FANOUT_RATE": "1.0", "FANOUT_BUDGET": "0"}),
    Variant("otel-group0", "otel_channels, rate 1.0, the group at 0 (SAMPLE_RATES)", {
        **_SDK, "FANOUT_RATE": "1.0", "FANOUT_GROUP_RATE": "0.0"}),
)}
ALIASES = {"otel-1.0": "otel-default"}
DEFAULT_VARIANTS = ("plain", "otel-default", "otel-every", "otel-0.01", "otel-nosdk", "asgi-mw")
SCALE_VARIANTS = ("plain", "otel-default", "otel-every")
OTLP_SUFFIX = "+otlp"


def resolve_variant(name: str) -> Variant:
    """A variant by name: an alias, or an SDK variant with ``+otlp`` (OTLP exporter for it)."""
    base, otlp = (name[:-len(OTLP_SUFFIX)], True) if name.endswith(OTLP_SUFFIX) else (name, False)
    base = ALIASES.get(base, base)
    if base not in VARIANTS:
        raise KeyError(name)
    variant = VARIANTS[base]
    if not otlp:
        return variant
    if variant.env.get("FANOUT_SDK") != "1":
        raise ValueError(f"{name}: {base} has no SDK, so no exporter (+otlp is for SDK variants)")
    return Variant(base + OTLP_SUFFIX, variant.label + ", OTLP exporter",
                   {**variant.env, "FANOUT_EXPORTER": "otlp"})


def uses_otlp(variant: Variant, exporter: str) -> bool:
    return variant.env.get("FANOUT_SDK") == "1" and (
        variant.env.get("FANOUT_EXPORTER", exporter) == "otlp")
