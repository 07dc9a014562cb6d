"""Command parsing: every payload gets exactly one schema-valid ack; nothing raises."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.commands import MAX_PAYLOAD, CommandError, Commands
from edge_agent.uplink.messages import Identity
from tests.mqtt_helpers import validator

IDENT = Identity("site-a", "cam-01", "camera", 3)


def reject(args):
    raise CommandError("bad_args", "args.level: must be positive")


def broken(args):
    raise KeyError("a bug in a handler")


COMMANDS = Commands(IDENT, {"get_config": lambda a: {"x": 1}, "strict": reject,
                            "broken": broken})


def check(doc):
    validator("ack").validate(doc)
    return doc


def test_ping_and_handler_results():
    ack = check(COMMANDS.handle(b'{"id": "c1", "cmd": "ping"}'))
    assert ack["ok"] and ack["id"] == "c1" and ack["result"] == {"pong": True}
    ack = check(COMMANDS.handle(b'{"id": "c2", "cmd": "get_config", "args": {}}'))
    assert ack["result"] == {"x": 1}


def test_a_failing_handler_is_acked_with_the_commands_id():
    ack = check(COMMANDS.handle(b'{"id": "c9", "cmd": "broken"}'))
    assert not ack["ok"] and ack["id"] == "c9" and ack["cmd"] == "broken"
    assert ack["error"]["code"] == "internal" and "KeyError" in ack["error"]["message"]


def test_errors_have_codes():
    cases = {
        b"not json": "malformed",
        b"[1, 2]": "malformed",
        b'{"cmd": "ping"}': "malformed",
        b'{"id": "c", "cmd": "self_destruct"}': "unknown_command",
        b'{"id": "c", "cmd": "ping", "args": 3}': "bad_args",
        b'{"id": "c", "cmd": "strict"}': "bad_args",
        b'{"id": "c", "cmd": "ping", "extra": 1}': "malformed",
        b"x" * (MAX_PAYLOAD + 1): "too_large",
        b"\xff\xfe": "malformed",
    }
    for payload, code in cases.items():
        ack = check(COMMANDS.handle(payload))
        assert not ack["ok"] and ack["error"]["code"] == code, (payload[:40], ack)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"id": json_values, "cmd": json_values},
                          optional={"args": json_values}).map(lambda d: json.dumps(d).encode()),
))
def test_fuzzed_payloads_always_get_one_valid_ack(payload):
    ack = check(COMMANDS.handle(payload))
    assert isinstance(ack["ok"], bool)
