"""The chaos judge on hand-made ledgers: each promise it checks is caught when broken, and a
clean run passes. (The chaos runs themselves are in test_chaos.py.)"""

from __future__ import annotations

from callqueue.testing.chaos import CarrierLedger, Dial, End, Fault, Limits, judge, render_table

LIMITS = Limits(rate_per_s=10, max_live=3, worker_ttl_s=3, carrier_life_s=8)
PEOPLE = {"a": "+1", "b": "+2", "c": "+3", "d": "+4"}


def steady(until: float, rate: int = 10, source: str = "p1") -> list[Dial]:
    """About ``rate`` short calls a second from t=0 to ``until``, to other people (spaced a
    little more than 1/rate apart: exact multiples of 0.1 s are not exact in floating point)."""
    step = 1.001 / rate
    return [Dial(f"s{i}", 1, i * step, source) for i in range(int(until * rate))]


def ends_of(dials: list[Dial], after: float = 0.05) -> list[End]:
    return [End(d.call, d.attempt, d.t + after, "busy") for d in dials]


def people_of(dials: list[Dial]) -> dict[str, str]:
    return {**{d.call: f"+9{d.call}" for d in dials}, **PEOPLE}


def test_a_clean_run_passes() -> None:
    dials = steady(6)
    report = judge("clean", CarrierLedger(dials, ends_of(dials)), people_of(dials), [], LIMITS)
    assert report.passed, report.problems
    assert report.max_dials_per_s == 10 and report.max_live == 1
    assert "pass" in render_table([report])


def test_an_attempt_dialed_twice_is_caught() -> None:
    dials = [Dial("a", 1, 0.0, "p1"), Dial("a", 1, 2.0, "p2")]
    report = judge("twice", CarrierLedger(dials, [End("a", 1, 0.5, "busy")]), PEOPLE, [], LIMITS)
    assert report.attempts_dialed_twice == 1
    assert not report.passed and "FAIL" in render_table([report])


def test_a_person_dialed_after_completing_is_caught_across_calls() -> None:
    people = {"a": "+1", "a2": "+1"}
    dials = [Dial("a", 1, 0.0, "p1"), Dial("a2", 1, 5.0, "p1")]
    ends = [End("a", 1, 1.0, "completed"), End("a2", 1, 5.5, "busy")]
    report = judge("redial", CarrierLedger(dials, ends), people, [], LIMITS)
    assert report.redials_after_done == 1
    assert "a2 #1 dialed at 5.000" in report.examples["dialed again after completion"][0]
    # Answered by a machine counts as done too.
    ends[0] = End("a", 1, 1.0, "machine")
    assert judge("machine", CarrierLedger(dials, ends), people, [], LIMITS).redials_after_done


def test_a_retry_while_the_previous_attempt_is_live_is_caught() -> None:
    dials = [Dial("a", 1, 0.0, "p1"), Dial("a", 2, 1.0, "p1")]
    report = judge("overlap", CarrierLedger(dials, [End("a", 1, 2.0, "busy")]), PEOPLE, [], LIMITS)
    assert report.overlapping_attempts == 1


def test_a_call_of_a_killed_process_ends_at_the_kill_and_others_live_their_longest() -> None:
    dials = [Dial("a", 1, 0.0, "p1"), Dial("a", 2, 1.5, "p2")]
    kill = Fault("kill -9", 1.0, kills="p1", recovery=False)
    report = judge("cut", CarrierLedger(dials, [End("a", 2, 2.0, "busy")]), PEOPLE, [kill], LIMITS)
    assert report.overlapping_attempts == 0, report.examples
    # Without the kill, attempt 1 (no end) may be live for the carrier's longest life.
    report = judge("uncut", CarrierLedger(dials, [End("a", 2, 2.0, "busy")]), PEOPLE, [], LIMITS)
    assert report.overlapping_attempts == 1


def test_live_calls_over_the_cap_are_caught() -> None:
    dials = [Dial(c, 1, i * 0.1, "p1") for i, c in enumerate("abcd")]
    ends = [End(c, 1, 3.0, "busy") for c in "abcd"]
    report = judge("cap", CarrierLedger(dials, ends), PEOPLE, [], LIMITS)
    assert report.max_live == 4
    assert any("cap 3" in p for p in report.problems)


def test_dials_over_the_rate_limit_in_a_sliding_second_are_caught() -> None:
    # 10 a second, plus one in the middle.
    dials = [*steady(3), Dial("a", 1, 1.25, "p1")]
    report = judge("rate", CarrierLedger(dials, ends_of(dials)), people_of(dials), [], LIMITS)
    assert report.max_dials_per_s == 11
    assert any("limit 10" in p for p in report.problems)


def test_recovery_is_measured_from_the_fault_against_its_target() -> None:
    before = steady(4)
    # Nothing for 6 s after the fault at 4 s, then the full rate again.
    after = [Dial(f"r{i}", 1, 10 + i * 0.1001, "p2") for i in range(30)]
    dials = [*before, *after]
    ledger = CarrierLedger(dials, ends_of(dials))
    kill = Fault("kill -9", 4.0, kills="p1")
    report = judge("slow", ledger, people_of(dials), [kill], LIMITS)
    assert report.full_rate_per_s == 10
    assert report.recovery_s == 6.0 and report.recovery_target_s == 5.0
    assert any("slow recovery" in p for p in report.problems)
    # The same stall is within target when the killed part stayed away 4.5 s.
    away = Fault("kill -9", 4.0, kills="p1", outage_s=4.5)
    report = judge("away", ledger, people_of(dials), [away], LIMITS)
    assert report.passed, report.problems
    assert report.recovery_target_s == 6.5
    # A run that never gets back to its rate fails.
    report = judge("never", CarrierLedger(before, ends_of(before)), people_of(before), [kill],
                   LIMITS)  # fmt: skip
    assert report.recovery_s is None and not report.passed


def test_calls_left_unfinished_fail_the_run() -> None:
    dials = steady(3)
    report = judge("stuck", CarrierLedger(dials, ends_of(dials)), people_of(dials), [], LIMITS,
                   not_terminal=["a"])  # fmt: skip
    assert not report.passed and report.not_terminal == 1


def test_dials_granted_before_a_fault_do_not_hide_the_dip_after_it() -> None:
    full = steady(4.8)  # the fault is at 4 s; what was granted before still goes out
    dip = [Dial(f"d{i}", 1, 4.8 + i * 0.5, "p1") for i in range(4)]  # 2 a second
    back = [Dial(f"b{i}", 1, 7.0 + i * 0.1001, "p1") for i in range(30)]
    dials = [*full, *dip, *back]
    fault = Fault("kill -9", 4.0, kills="p2")
    report = judge("dip", CarrierLedger(dials, ends_of(dials)), people_of(dials), [fault], LIMITS)
    assert report.recovery_s is not None and 2.9 <= report.recovery_s <= 3.1, report.recovery_s


def test_a_lagging_carrier_clock_shortens_the_rate_window() -> None:
    # Dials 105 ms apart: 10 in a second; in windows 60 ms shorter, 9.
    dials = [Dial(f"s{i}", 1, i * 0.105, "plivo") for i in range(11)]
    people = people_of(dials)
    exact = judge("exact", CarrierLedger(dials, ends_of(dials)), people, [], LIMITS)
    assert exact.max_dials_per_s == 10
    lagging = CarrierLedger(dials, ends_of(dials), slack_s=0.06)
    report = judge("lagging", lagging, people, [], LIMITS)
    assert report.max_dials_per_s == 9 and report.passed
    assert "windows of 0.940 s" in render_table([report])
