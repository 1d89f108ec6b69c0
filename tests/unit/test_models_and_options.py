"""Pure logic: the transition table, retry delays, options, keys, codec, settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callqueue.config import ConfigError, load_settings
from callqueue.engine.codec import decode_spec, encode_spec
from callqueue.engine.keys import QueueKeys, check_queue_name
from callqueue.engine.options import QueueOptions
from callqueue.engine.scripts import Library
from callqueue.models import (
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    CallSpec,
    CallStatus,
    Outcome,
    Priority,
    RetryPolicy,
)


def test_terminal_statuses_are_dead_ends_and_every_status_has_a_row() -> None:
    assert set(TRANSITIONS) == set(CallStatus)
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()
    for status in set(CallStatus) - TERMINAL_STATUSES:
        assert TRANSITIONS[status] & TERMINAL_STATUSES, f"{status} can never end"


def test_only_a_waiting_call_can_start_dialing_and_live_calls_cannot_go_back_to_waiting() -> None:
    starts = {s for s, targets in TRANSITIONS.items() if CallStatus.DIALING in targets}
    assert starts == {CallStatus.QUEUED}
    # ringing/in_progress never return to queued: a placed call is never re-placed silently.
    assert CallStatus.QUEUED not in TRANSITIONS[CallStatus.RINGING]
    assert CallStatus.QUEUED not in TRANSITIONS[CallStatus.IN_PROGRESS]
    assert {CallStatus.DIALING, CallStatus.RINGING, CallStatus.IN_PROGRESS} == LIVE_STATUSES


def test_lua_library_embeds_the_python_transition_table() -> None:
    code = Library().code
    for source, targets in TRANSITIONS.items():
        row = ", ".join(f"{t.value} = true" for t in sorted(targets))
        assert f"  {source.value} = {{{row}}}," in code


def test_priority_ranks_serve_urgent_first() -> None:
    ordered = sorted(Priority, key=lambda p: p.rank)
    assert ordered == [Priority.URGENT, Priority.HIGH, Priority.NORMAL, Priority.LOW]
    assert all(Priority.from_rank(p.rank) is p for p in Priority)


@given(attempt=st.integers(1, 30), rand=st.floats(0, 1, exclude_max=True))
def test_backoff_grows_is_capped_and_jitter_stays_in_bounds(attempt: int, rand: float) -> None:
    policy = RetryPolicy(base_delay_s=10, factor=2, max_delay_s=300, jitter=0.2)
    raw = min(300, 10 * 2 ** (attempt - 1))
    delay = policy.delay_s(attempt, rand)
    assert raw * 0.8 - 1e-9 <= delay <= raw * 1.2 + 1e-9


def test_options_reject_nonsense_and_derive_the_rate_window() -> None:
    with pytest.raises(ValueError, match="max_live_calls"):
        QueueOptions(max_live_calls=-1)
    assert QueueOptions(rate_per_second=50, rate_margin_ms=15).rate_window() == (50, 1015)
    assert QueueOptions(rate_per_second=0.5, rate_margin_ms=0).rate_window() == (1, 2000)
    assert QueueOptions(rate_per_second=0).rate_window()[0] == 0
    opts = QueueOptions(dial_lease_s=30, ring_timeout_s=60, default_max_duration_s=1800, grace_s=60)
    assert opts.longest_life_s(None) == 1950
    assert opts.longest_life_s(10) == 160


def test_all_keys_of_a_queue_share_one_hash_tag() -> None:
    keys = QueueKeys("campaigns")
    names = [
        keys.campaign_ready("c1"),
        keys.campaign_index,
        keys.campaign("c1"),
        keys.campaign_live("c1"),
        keys.campaign_rate_log("c1"),
        keys.campaign_stats("c1"),
        keys.campaigns,
        keys.zone_offsets,
        keys.scheduled,
        keys.live,
        keys.leases,
        keys.rate_log,
        keys.stats,
        keys.finished,
        keys.dead,
        keys.control,
        keys.workers,
        keys.call("x"),
        keys.batch("b"),
        keys.seq,
        keys.dials_per_second,
    ]
    assert all(n.startswith("cq:{campaigns}:") for n in names)
    assert len(set(names)) == len(names)
    with pytest.raises(ValueError, match="queue name"):
        check_queue_name("bad name{}")


def test_spec_round_trips_through_its_stored_form() -> None:
    spec = CallSpec(
        "c1",
        "+919123456789",
        "camp",
        {"variables": {"name": "Zoë"}},
        Priority.HIGH,
        2,
        1_800_000_000_000,
        "b1",
        "hash",
    )
    assert decode_spec("c1", encode_spec(spec), Priority.HIGH, "hash") == spec


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_CALLS", "-5")
    monkeypatch.setenv("RETRY_ON", "busy,sometimes")
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert "MAX_CONCURRENT_CALLS" in message and "RETRY_ON" in message


def test_settings_build_engine_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_PER_SECOND", "20")
    monkeypatch.setenv("RETRY_ON", "busy,machine")
    settings = load_settings(_env_file=None)
    options = settings.queue_options()
    assert options.rate_per_second == 20
    assert options.retry.retry_on == {Outcome.BUSY, Outcome.MACHINE}
    assert settings.carrier_name == "simulator"
