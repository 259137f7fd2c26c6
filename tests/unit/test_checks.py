"""System checks: settings validation and channel-layer traps (ids and hints)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from otel_channels.checks import check_channel_layers, check_settings
from otel_channels.conf import get_config


def ids(messages):
    return [message.id for message in messages]


def test_defaults_are_clean():
    assert check_settings() == []
    assert check_channel_layers() == []


@pytest.mark.parametrize(("value", "expected"), [
    ({"NOT_A_KEY": 1}, ["otel_channels.W001"]),
    ({"MESSAGE_SAMPLE_RATE": 2}, ["otel_channels.E002"]),
    ({"MESSAGE_SAMPLE_RATE": "1"}, ["otel_channels.E002"]),
    ({"FRAME_TRACE_MODE": "sibling"}, ["otel_channels.E002"]),
    ({"GROUP_MESSAGE_PARENT": "parent"}, ["otel_channels.E002"]),
    ({"CLIENT_CONTEXT": "trust"}, ["otel_channels.E002"]),
    ({"QUERY_TRACEPARENT": "yes"}, ["otel_channels.E002"]),
    ({"MAX_FRAME_SIZE": 0}, ["otel_channels.E002"]),
    ({"CARRIER_KEY": "type"}, ["otel_channels.E002"]),
    ({"SPAN_HOOK": "no.such.module.hook"}, ["otel_channels.E003"]),
    ({"AUTO_INSTRUMENT": True, "MAX_FRAME_SIZE": 1024, "JSON_TRACEPARENT_KEY": None}, []),
    ({"CLIENT_CONTEXT": "authenticated", "JSON_TRACEPARENT_KEY": "trace_flags",
      "JSON_CONTEXT_TO_CLIENT": True}, []),
    ({"JSON_CONTEXT_TO_CLIENT": "yes"}, ["otel_channels.E002"]),
    ({"JSON_TRACEPARENT_KEY": ""}, ["otel_channels.E002"]),
    ({"JSON_CONTEXT_TO_CLIENT": True, "JSON_TRACEPARENT_KEY": None}, ["otel_channels.W003"]),
])
def test_settings_checks(value, expected):
    with override_settings(OTEL_CHANNELS=value):
        messages = check_settings()
    assert ids(messages) == expected
    assert all(message.hint for message in messages)


@pytest.mark.parametrize(("value", "expected", "words"), [
    (None, [], []),
    ({}, [], []),
    ({"routes": {"/ws/cursors/<room>/": 0.0, "/ws/chat/<room>/": 1}, "groups": {"cursors_{id}": 0}},
     [], []),
    ([("routes", {})], ["otel_channels.E002"], ["must be a dict like"]),
    ({"route": {"/ws/cursors/<room>/": 0.0}}, ["otel_channels.E002"], ["unknown sub-key 'route'"]),
    ({"routes": ["/ws/cursors/<room>/"]}, ["otel_channels.E002"], ["['routes'] must be a dict of"]),
    ({"routes": {1: 0.0}}, ["otel_channels.E002"], ["['routes'] has the key 1"]),
    ({"routes": {"": 0.0}}, ["otel_channels.E002"], ["non-empty str"]),
    ({"groups": {"cursors_{id}": 1.5}}, ["otel_channels.E002"], ["is 1.5; a rate"]),
    ({"groups": {"cursors_{id}": "0"}}, ["otel_channels.E002"], ["is '0'; a rate"]),
    ({"groups": {"cursors_{id}": True}}, ["otel_channels.E002"], ["is True; a rate"]),
    # Every problem is its own error.
    ({"routes": {"/a/": -1}, "groups": {"b": None}, "other": {}},
     ["otel_channels.E002"] * 3, ["['routes']['/a/'] is -1", "['groups']['b'] is None",
                                  "unknown sub-key 'other'"]),
    # Templates no span can have: an id the default template replaces, a converter.
    ({"groups": {"cursors_42": 0.0}}, ["otel_channels.W004"], ["'cursors_{id}'"]),
    ({"routes": {"/ws/item/<int:pk>/": 0.0}}, ["otel_channels.W004"], ["'/ws/item/<pk>/'"]),
])
def test_sample_rates_checks(value, expected, words):
    with override_settings(OTEL_CHANNELS={"SAMPLE_RATES": value}):
        messages = check_settings()
        rates = get_config().SAMPLE_RATES
    assert ids(messages) == expected
    for message, word in zip(messages, words, strict=True):
        assert "SAMPLE_RATES" in message.msg
        assert word in message.msg + message.hint, (word, message.msg, message.hint)
        assert message.hint
    if any(i.startswith("otel_channels.E") for i in expected):  # ignored at run time
        assert rates.routes == {} and rates.groups == {}


def test_sample_rates_runtime_form():
    with override_settings(OTEL_CHANNELS={"SAMPLE_RATES": {"routes": {"/ws/a/": 0}}}):
        rates = get_config().SAMPLE_RATES
    assert rates.routes == {"/ws/a/": 0.0} and rates.groups == {}
    assert type(rates.routes["/ws/a/"]) is float


def test_sample_rates_group_keys_follow_a_custom_group_template():
    """With a GROUP_TEMPLATE of your own, a key with digits may be a template: no W004."""
    with override_settings(OTEL_CHANNELS={"GROUP_TEMPLATE": str,
                                          "SAMPLE_RATES": {"groups": {"cursors_42": 0.0}}}):
        assert check_settings() == []


def test_not_a_dict():
    with override_settings(OTEL_CHANNELS=["nope"]):
        assert ids(check_settings()) == ["otel_channels.E001"]


def test_config_cache_cleared_on_setting_changed():
    assert get_config().MESSAGE_SAMPLE_RATE == 1.0
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": 0.25}):
        assert get_config().MESSAGE_SAMPLE_RATE == 0.25
    assert get_config().MESSAGE_SAMPLE_RATE == 1.0


def test_invalid_value_falls_back_to_default_at_runtime():
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": 7}):
        assert get_config().MESSAGE_SAMPLE_RATE == 1.0


REDIS = "channels_redis.core.RedisChannelLayer"


@pytest.mark.parametrize(("hosts", "expected"), [
    (["redis://127.0.0.1:6379"], ["otel_channels.W010", "otel_channels.W011"]),
    (None, ["otel_channels.W010", "otel_channels.W011"]),
    # (host, port) tuples cannot carry options: redis-py's defaults apply, so both traps.
    ([("127.0.0.1", 6379)], ["otel_channels.W010", "otel_channels.W011"]),
    ([{"address": "redis://127.0.0.1:6379", "socket_timeout": 5}],
     ["otel_channels.W010", "otel_channels.W011"]),
    ([{"address": "redis://127.0.0.1:6379", "socket_timeout": 30}], ["otel_channels.W011"]),
    ([{"address": "redis://127.0.0.1:6379?socket_timeout=30", "max_connections": 500}], []),
    ([{"address": "redis://127.0.0.1:6379", "socket_timeout": 30, "max_connections": 500}], []),
])
def test_redis_layer_checks(hosts, expected):
    config = {"hosts": hosts} if hosts is not None else {}
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": REDIS, "CONFIG": config}}):
        messages = check_channel_layers()
    assert ids(messages) == expected
    for message in messages:
        assert "socket_timeout" in message.hint or "max_connections" in message.hint


SENTINELS = [("127.0.0.1", 26379), ("127.0.0.1", 26380), ("127.0.0.1", 26381)]
SENTINEL = {"master_name": "mymaster", "sentinels": SENTINELS}


@pytest.mark.parametrize(("host", "expected"), [
    # The entry's own socket_timeout / max_connections are the master pool's.
    ({**SENTINEL, "socket_timeout": 30, "max_connections": 2000}, []),
    ({**SENTINEL, "socket_timeout": 30, "max_connections": 2000,
      "sentinel_kwargs": {"socket_timeout": 2}}, []),
    # A timeout only in sentinel_kwargs leaves the master connections on redis-py's 5 s.
    ({**SENTINEL, "max_connections": 2000, "sentinel_kwargs": {"socket_timeout": 30}},
     ["otel_channels.W010"]),
    ({**SENTINEL, "socket_timeout": 30}, ["otel_channels.W011"]),
    # Lookups with no timeout: a silent sentinel hangs every reconnect of a failover.
    ({**SENTINEL, "socket_timeout": 30, "max_connections": 2000,
      "sentinel_kwargs": {"socket_timeout": None}}, ["otel_channels.W012"]),
    # channels-redis reads "address" first and never asks the sentinels.
    ({**SENTINEL, "address": "redis://127.0.0.1:6379", "socket_timeout": 30,
      "max_connections": 2000}, ["otel_channels.W012"]),
])
@pytest.mark.parametrize("backend", [REDIS, "channels_redis.pubsub.RedisPubSubChannelLayer"])
def test_sentinel_entries(backend, host, expected):
    layer = {"BACKEND": backend, "CONFIG": {"hosts": [host]}}
    with override_settings(CHANNEL_LAYERS={"default": layer}):
        messages = check_channel_layers()
    assert ids(messages) == expected
    for message in messages:
        if message.id == "otel_channels.W010":
            assert "top level of the Sentinel entry" in message.hint
            assert "applies to the sentinel lookups only" in message.hint
        assert "Sentinel master 'mymaster'" in message.msg or message.id != "otel_channels.W012"


def test_pubsub_layer_checked_too():
    layer = {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
             "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}
    with override_settings(CHANNEL_LAYERS={"default": layer}):
        assert "otel_channels.W010" in ids(check_channel_layers())


def test_checks_are_registered():
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": -1}), \
            pytest.raises(SystemCheckError, match="otel_channels.E002"):
        call_command("check")


@pytest.mark.parametrize(("backend", "hosts", "expected"), [
    # valkey-py kept redis-py 8's 5 s socket timeout but has no pool cap: W010 only.
    ("channels_valkey.core.ValkeyChannelLayer", ["valkey://127.0.0.1:6379"],
     ["otel_channels.W010"]),
    ("channels_valkey.pubsub.ValkeyPubSubChannelLayer", ["valkey://127.0.0.1:6379"],
     ["otel_channels.W010"]),
    ("channels_valkey.core.ValkeyChannelLayer",
     [{"address": "valkey://127.0.0.1:6379", "socket_timeout": 30}], []),
])
def test_valkey_layers_have_the_same_idle_timeout_trap(backend, hosts, expected):
    layer = {"BACKEND": backend, "CONFIG": {"hosts": hosts}}
    with override_settings(CHANNEL_LAYERS={"default": layer}):
        messages = check_channel_layers()
    assert ids(messages) == expected
    for message in messages:
        assert "valkey-py" in message.msg and "socket_timeout" in message.hint


def test_environment_settings_for_zero_code_users(monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_CHANNELS_MESSAGE_SAMPLE_RATE", "0.25")
    monkeypatch.setenv("OTEL_PYTHON_CHANNELS_MAX_PROCESS_SPANS_PER_BROADCAST", "none")
    monkeypatch.setenv("OTEL_PYTHON_CHANNELS_SLOW_PROCESS_THRESHOLD", "2")
    with override_settings(OTEL_CHANNELS={}):
        config = get_config()
        assert config.MESSAGE_SAMPLE_RATE == 0.25
        assert config.MAX_PROCESS_SPANS_PER_BROADCAST is None
        assert config.SLOW_PROCESS_THRESHOLD == 2
        assert check_settings() == []
    # The Django setting wins over the environment.
    with override_settings(OTEL_CHANNELS={"MESSAGE_SAMPLE_RATE": 0.5}):
        assert get_config().MESSAGE_SAMPLE_RATE == 0.5
    monkeypatch.setenv("OTEL_PYTHON_CHANNELS_MAX_PROCESS_SPANS_PER_BROADCAST", "-3")
    with override_settings(OTEL_CHANNELS={}):
        assert get_config().MAX_PROCESS_SPANS_PER_BROADCAST == 10  # refused: the default
        (message,) = check_settings()
    assert message.id == "otel_channels.W002"
    assert "OTEL_PYTHON_CHANNELS_MAX_PROCESS_SPANS_PER_BROADCAST='-3'" in message.msg


def test_the_json_key_check_says_what_the_key_may_hold():
    with override_settings(OTEL_CHANNELS={"JSON_TRACEPARENT_KEY": 5}):
        [message] = check_settings()
    assert "W3C traceparent string or a carrier object" in message.msg
