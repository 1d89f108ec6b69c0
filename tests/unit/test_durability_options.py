"""ENQUEUE_DURABILITY settings, the wait each mode sends and how its answer is read, and the
503 message a client gets (no server: the waits themselves are tested on real ones)."""

from __future__ import annotations

import pytest

from callqueue.api.errors import not_durable_msg
from callqueue.config import ConfigError, load_settings
from callqueue.engine.durability import Durability, DurabilityOptions, NotDurable


def test_settings_default_to_none_and_name_the_variable_when_wrong() -> None:
    settings = load_settings(_env_file=None)
    assert settings.durability() == DurabilityOptions(Durability.NONE, 1.0)
    assert not settings.durability().waits
    chosen = load_settings(_env_file=None, enqueue_durability="replica",
                           enqueue_durability_timeout=0.25)  # fmt: skip
    assert chosen.durability() == DurabilityOptions(Durability.REPLICA, 0.25)
    for name, value in (("enqueue_durability", "disk"), ("enqueue_durability_timeout", 6),
                        ("enqueue_durability_timeout", 0)):  # fmt: skip
        with pytest.raises(ConfigError, match=name.upper()):
            load_settings(_env_file=None, **{name: value})


def test_each_mode_sends_its_wait_and_reads_its_answer() -> None:
    aof = DurabilityOptions(Durability.AOF, 0.5)
    assert aof.wait_command() == ("WAITAOF", 1, 0, 500)
    assert aof.confirmed([1, 0]) and aof.confirmed([1, 2])
    assert not aof.confirmed([0, 2]) and not aof.confirmed(None)
    replica = DurabilityOptions(Durability.REPLICA, 2)
    assert replica.wait_command() == ("WAIT", 1, 2000)
    assert replica.confirmed(1) and replica.confirmed(3)
    assert not replica.confirmed(0) and not replica.confirmed("x")
    with pytest.raises(ValueError, match="timeout"):
        DurabilityOptions(Durability.AOF, 10)


def test_a_503_says_what_happened_and_how_to_retry_safely() -> None:
    failure = NotDurable(DurabilityOptions(Durability.REPLICA, 1), "WAIT answered 0")
    single = not_durable_msg(failure.naming(["call-456"]))
    assert single == (
        "queued, but not confirmed on a replica within 1 s (WAIT answered 0): it may not "
        "survive a failover. Retrying is safe: send the same body again with custom_call_id "
        "'call-456'; nothing is queued twice."
    )
    bulk = not_durable_msg(failure.naming(batch_id="b-1"))
    assert bulk.endswith("send the same calls again with batch_id 'b-1'; nothing is queued twice.")
    aof = NotDurable(DurabilityOptions(Durability.AOF, 0.2), "WAITAOF answered 0 0")
    assert "fsynced to the append-only file within 0.2 s" in str(aof)
    assert "a crash of the Redis machine" in str(aof)
    assert not_durable_msg(aof, "post the same file again").endswith(
        "Retrying is safe: post the same file again; nothing is queued twice."
    )
