"""Calling windows: parsing, local-hours evaluation across midnight, zones and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callqueue.windows import (
    HORIZON_MS,
    NO_TRANSITION_MS,
    PRESETS,
    CallingWindow,
    zone_offset_entry,
    zones_for_number,
)
from window_cases import ZONES, any_window

NY, LA, LONDON = "America/New_York", "America/Los_Angeles", "Europe/London"
KOLKATA, LORD_HOWE = "Asia/Kolkata", "Australia/Lord_Howe"

#: Zones with every kind of offset change: 1-hour DST both hemispheres, 30-minute DST (Lord
#: Howe), 2-hour DST (Troll), changes at local midnight (Santiago, Havana, Beirut), 45-minute
#: offsets, "negative DST" (Dublin), DST abolished (Sao Paulo 2019, Tehran 2022), Ramadan
#: suspensions (Casablanca), and zones without DST.


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def ms(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def from_ms(t: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=t)


def window(text: str) -> CallingWindow:
    return CallingWindow.parse(text)


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days", "start", "end"),
    [
        ("mon-sat 09:00-21:00", {0, 1, 2, 3, 4, 5}, 540, 1260),
        ("mon,wed,fri 10:00-18:30", {0, 2, 4}, 600, 1110),
        ("daily 08:00-21:00", set(range(7)), 480, 1260),
        ("fri-mon 22:00-02:00", {4, 5, 6, 0}, 1320, 120),
        ("sun 00:00-24:00", {6}, 0, 1440),
        ("sat 22:00-00:00", {5}, 1320, 0),
        ("  MON - Fri ,  sun  9:05 - 17:00 ", {0, 1, 2, 3, 4, 6}, 545, 1020),
        ("mon-mon 09:00-10:00", {0}, 540, 600),
        ("tue-mon 09:00-10:00", set(range(7)), 540, 600),
        ("mon,mon-tue 09:00-10:00", {0, 1}, 540, 600),
    ],
)
def test_parse_good_texts(text: str, days: set[int], start: int, end: int) -> None:
    assert window(text) == CallingWindow(frozenset(days), start, end)


def test_presets_are_case_insensitive() -> None:
    assert window("tcpa") == window("TCPA ") == CallingWindow(frozenset(range(7)), 480, 1260)
    assert window("Trai") == CallingWindow(frozenset(range(7)), 540, 1260)
    assert PRESETS["tcpa"].to_text() == "daily 08:00-21:00"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected '<days> <start>-<end>'"),
        ("tcpaa", "expected '<days> <start>-<end>'"),
        ("mon", "expected '<days> <start>-<end>'"),
        ("09:00-21:00", "expected '<days> <start>-<end>'"),
        ("mon 09:00", "expected '<days> <start>-<end>'"),
        ("xyz 09:00-21:00", "unknown day 'xyz'"),
        ("mon-xyz 09:00-21:00", "unknown day 'xyz'"),
        ("monday 09:00-21:00", "unknown day 'monday'"),
        ("mon-sat, 09:00-21:00", "unknown day ''"),
        ("mon sat 09:00-21:00", "must be one word"),
        ("mon 9-21", "start time '9' is not HH:MM"),
        ("mon 09:00-2100", "end time '2100' is not HH:MM"),
        ("mon 25:00-21:00", "start time '25:00' is out of range"),
        ("mon 09:60-21:00", "start time '09:60' is out of range"),
        ("mon 09:00-24:30", "end time '24:30' is out of range"),
        ("mon 24:00-02:00", "the start must be before 24:00"),
        ("mon 09:00-09:00", "start and end are equal"),
    ],
)
def test_parse_bad_texts_say_what_is_wrong_and_show_an_example(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        window(text)
    assert problem in str(info.value)
    if "before 24:00" not in problem:
        assert "mon-sat 09:00-21:00" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"days": frozenset(), "start_min": 540, "end_min": 600}, "days is empty"),
        ({"days": frozenset({7}), "start_min": 540, "end_min": 600}, "got 7"),
        ({"days": frozenset({True}), "start_min": 540, "end_min": 600}, "got True"),
        ({"days": "mon", "start_min": 540, "end_min": 600}, "set of weekday numbers"),
        ({"days": frozenset({0}), "start_min": 1440, "end_min": 600}, "start_min must be"),
        ({"days": frozenset({0}), "start_min": -1, "end_min": 600}, "start_min must be"),
        ({"days": frozenset({0}), "start_min": 540, "end_min": 1441}, "end_min must be"),
        ({"days": frozenset({0}), "start_min": 540, "end_min": 540.5}, "end_min must be"),
        ({"days": frozenset({0}), "start_min": 540, "end_min": 540}, "both 540"),
    ],
)
def test_constructor_validates(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CallingWindow(**kwargs)  # type: ignore[arg-type]


def test_constructor_accepts_any_set_of_days() -> None:
    assert CallingWindow({0, 1}, 540, 600).days == frozenset({0, 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("mon,tue,wed,thu,fri,sat 9:00-21:00", "mon-sat 09:00-21:00"),
        ("sun,mon,fri,sat 22:00-02:00", "fri-mon 22:00-02:00"),
        ("mon,wed,fri 10:00-18:30", "mon,wed,fri 10:00-18:30"),
        ("sun,mon,wed 00:00-24:00", "wed,sun-mon 00:00-24:00"),
        ("mon-sun 08:00-21:00", "daily 08:00-21:00"),
        ("sat 22:00-00:00", "sat 22:00-00:00"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    assert window(text).to_text() == canonical
    assert window(canonical) == window(text)


@given(any_window())
def test_text_and_encoding_round_trip(w: CallingWindow) -> None:
    assert CallingWindow.parse(w.to_text()) == w
    assert CallingWindow.decode(w.encode()) == w


def test_encode() -> None:
    assert window("mon-sat 09:00-21:00").encode() == "63|540|1260"
    assert window("tcpa").encode() == "127|480|1260"
    assert window("sun 22:00-02:00").encode() == "64|1320|120"
    with pytest.raises(ValueError, match=r"mask must be 1\.\.127"):
        CallingWindow.decode("0|540|600")
    with pytest.raises(ValueError, match="bad encoded"):
        CallingWindow.decode("63|540")


# -- one zone -----------------------------------------------------------------------------


def test_trai_in_india() -> None:
    trai = window("trai")
    # 09:00 IST is 03:30 UTC; 21:00 IST is 15:30 UTC.
    assert not trai.is_open([KOLKATA], utc(2024, 6, 3, 3, 29))
    assert trai.next_open([KOLKATA], utc(2024, 6, 3, 3, 0)) == utc(2024, 6, 3, 3, 30)
    at = utc(2024, 6, 3, 15, 29, 59)
    assert trai.is_open([KOLKATA], at) and trai.next_open([KOLKATA], at) is at
    assert not trai.is_open([KOLKATA], utc(2024, 6, 3, 15, 30))
    assert trai.next_open([KOLKATA], utc(2024, 6, 3, 15, 30)) == utc(2024, 6, 4, 3, 30)


def test_weekday_boundaries() -> None:
    w = window("mon-sat 09:00-21:00")
    # 2024-06-08 is a Saturday: after 21:00 the next opening is Monday 09:00.
    assert w.is_open(["UTC"], utc(2024, 6, 8, 20, 59))
    assert w.next_open(["UTC"], utc(2024, 6, 8, 21, 0)) == utc(2024, 6, 10, 9, 0)
    assert w.next_open(["UTC"], utc(2024, 6, 9, 12, 0)) == utc(2024, 6, 10, 9, 0)
    # The answer comes back in the time zone of `at`.
    at = datetime(2024, 6, 9, 12, 0, tzinfo=ZoneInfo(KOLKATA))
    result = w.next_open(["UTC"], at)
    assert result == utc(2024, 6, 10, 9, 0) and result is not None
    assert result.tzinfo == at.tzinfo


def test_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    w = window("fri-mon 22:00-02:00")  # 2024-06-07 is a Friday
    z = ["UTC"]
    assert w.is_open(z, utc(2024, 6, 7, 22, 0))
    assert w.is_open(z, utc(2024, 6, 8, 1, 59))  # Saturday early: Friday's opening
    assert not w.is_open(z, utc(2024, 6, 8, 2, 0))
    assert w.next_open(z, utc(2024, 6, 8, 2, 0)) == utc(2024, 6, 8, 22, 0)
    assert w.is_open(z, utc(2024, 6, 10, 1, 0))  # Monday early: Sunday's opening
    assert w.is_open(z, utc(2024, 6, 11, 1, 0))  # Tuesday early: Monday's opening
    assert not w.is_open(z, utc(2024, 6, 11, 22, 30))  # Tuesday is not listed
    assert not w.is_open(z, utc(2024, 6, 7, 1, 0))  # Friday early: Thursday not listed
    assert w.next_open(z, utc(2024, 6, 11, 3, 0)) == utc(2024, 6, 14, 22, 0)
    to_midnight = window("sat 22:00-00:00")
    assert to_midnight.is_open(z, utc(2024, 6, 8, 23, 59, 59))
    assert not to_midnight.is_open(z, utc(2024, 6, 9, 0, 0))


def test_end_at_24_00() -> None:
    w = window("sat 09:00-24:00")
    assert w.is_open(["UTC"], utc(2024, 6, 8, 23, 59, 59, 999999))
    assert not w.is_open(["UTC"], utc(2024, 6, 9, 0, 0))
    every = window("daily 00:00-24:00")
    at = utc(2024, 6, 9, 0, 0)
    assert every.next_open([NY, KOLKATA, LORD_HOWE], at) is at


def test_argument_errors() -> None:
    w = window("tcpa")
    with pytest.raises(ValueError, match="timezone-aware"):
        w.is_open([NY], datetime(2024, 1, 1, 12, 0))
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        w.next_open(["Mars/Olympus"], utc(2024, 1, 1))
    with pytest.raises(ValueError, match="no time zones"):
        w.is_open([], utc(2024, 1, 1))
    with pytest.raises(TypeError, match="not one str"):
        w.next_open(NY, utc(2024, 1, 1))


# -- several zones ------------------------------------------------------------------------


def test_new_york_and_los_angeles_both_open() -> None:
    tcpa, zones = window("tcpa"), [NY, LA]
    # Winter: 08:00 in LA is 16:00 UTC; 21:00 in New York is 02:00 UTC.
    assert tcpa.is_open([NY], utc(2024, 1, 10, 13, 0))
    assert not tcpa.is_open(zones, utc(2024, 1, 10, 13, 0))
    assert tcpa.next_open(zones, utc(2024, 1, 10, 13, 0)) == utc(2024, 1, 10, 16, 0)
    assert tcpa.is_open(zones, utc(2024, 1, 11, 1, 59))
    assert tcpa.next_open(zones, utc(2024, 1, 11, 2, 0)) == utc(2024, 1, 11, 16, 0)
    # Summer: an hour earlier in UTC.
    assert tcpa.next_open(zones, utc(2024, 7, 10, 13, 0)) == utc(2024, 7, 10, 15, 0)


def test_intersection_with_india_and_lord_howe() -> None:
    w = window("daily 09:00-21:00")
    # January: Lord Howe is +11 (DST), Kolkata +5:30. Lord Howe 09:00-21:00 = 22:00-10:00 UTC;
    # Kolkata 03:30-15:30 UTC; both: 03:30-10:00 UTC.
    zones = [KOLKATA, LORD_HOWE]
    assert w.next_open(zones, utc(2024, 1, 10, 0, 0)) == utc(2024, 1, 10, 3, 30)
    assert w.is_open(zones, utc(2024, 1, 10, 9, 59))
    assert w.next_open(zones, utc(2024, 1, 10, 10, 0)) == utc(2024, 1, 11, 3, 30)
    # July: Lord Howe is +10:30, so it closes at 10:30 UTC.
    assert w.is_open(zones, utc(2024, 7, 10, 10, 29))
    assert not w.is_open(zones, utc(2024, 7, 10, 10, 30))


def test_zones_whose_windows_never_overlap_give_none() -> None:
    w = window("daily 09:00-15:00")
    # +6 is open 03:00-09:00 UTC, -6 is open 15:00-21:00 UTC: never both.
    assert w.next_open(["Etc/GMT-6", "Etc/GMT+6"], utc(2024, 1, 10, 0, 0)) is None
    assert w.next_open(["Asia/Tokyo", "America/Chicago"], utc(2024, 1, 10, 0, 0)) is None
    # One zone alone always opens within a week.
    assert window("mon 09:00-10:00").next_open(["UTC"], utc(2024, 6, 10, 10, 0)) == utc(
        2024, 6, 17, 9, 0
    )


# -- DST changes --------------------------------------------------------------------------


def test_new_york_spring_forward() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT at 07:00 UTC.
    tcpa = window("tcpa")
    assert tcpa.next_open([NY], utc(2024, 3, 10, 2, 0)) == utc(2024, 3, 10, 12, 0)  # 08:00 EDT
    assert tcpa.next_open([NY], utc(2024, 3, 9, 3, 0)) == utc(2024, 3, 9, 13, 0)  # 08:00 EST
    # A start in the gap: the clock jumps from 01:59:59 to 03:00, inside 02:30-04:00.
    w = window("daily 02:30-04:00")
    assert not w.is_open([NY], utc(2024, 3, 10, 6, 59, 59))
    assert w.is_open([NY], utc(2024, 3, 10, 7, 0))
    assert w.next_open([NY], utc(2024, 3, 10, 6, 0)) == utc(2024, 3, 10, 7, 0)
    assert not w.is_open([NY], utc(2024, 3, 10, 8, 0))  # 04:00 EDT
    # A window wholly inside the gap does not open that day.
    inside = window("sun 02:00-02:59")
    assert inside.next_open([NY], utc(2024, 3, 10, 6, 0)) == utc(2024, 3, 17, 6, 0)
    # An end in the gap closes at the jump.
    ends = window("sun 01:00-02:30")
    assert ends.is_open([NY], utc(2024, 3, 10, 6, 59, 59))
    assert not ends.is_open([NY], utc(2024, 3, 10, 7, 0))


def test_new_york_fall_back() -> None:
    # 2024-11-03 02:00 EDT -> 01:00 EST at 06:00 UTC: 01:00-01:59 happens twice.
    tcpa = window("tcpa")
    assert tcpa.next_open([NY], utc(2024, 11, 3, 1, 0)) == utc(2024, 11, 3, 13, 0)  # 08:00 EST
    # A start in the repeated hour opens at its first occurrence, and again at its second.
    w = window("daily 01:30-01:45")
    assert w.next_open([NY], utc(2024, 11, 3, 5, 0)) == utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    assert not w.is_open([NY], utc(2024, 11, 3, 5, 45))
    assert w.next_open([NY], utc(2024, 11, 3, 5, 50)) == utc(2024, 11, 3, 6, 30)  # 01:30 EST
    # The clock set back into the window opens it at the change.
    back = window("daily 01:00-01:20")
    assert not back.is_open([NY], utc(2024, 11, 3, 5, 30))
    assert back.next_open([NY], utc(2024, 11, 3, 5, 30)) == utc(2024, 11, 3, 6, 0)


def test_london_changes() -> None:
    # 2024-03-31 01:00 GMT -> 02:00 BST at 01:00 UTC; a 01:30 start is in the gap.
    w = window("sun 01:30-03:00")
    assert w.next_open([LONDON], utc(2024, 3, 31, 0, 0)) == utc(2024, 3, 31, 1, 0)
    assert not w.is_open([LONDON], utc(2024, 3, 31, 2, 0))  # 03:00 BST
    # 2024-10-27 02:00 BST -> 01:00 GMT at 01:00 UTC: 01:00-02:00 is open for two hours.
    night = window("daily 01:00-02:00")
    assert night.next_open([LONDON], utc(2024, 10, 26, 23, 0)) == utc(2024, 10, 27, 0, 0)
    assert night.is_open([LONDON], utc(2024, 10, 27, 1, 30))
    assert not night.is_open([LONDON], utc(2024, 10, 27, 2, 0))
    assert night.next_open([LONDON], utc(2024, 10, 27, 2, 0)) == utc(2024, 10, 28, 1, 0)


def test_lord_howe_half_hour_changes() -> None:
    # 2024-10-06 02:00 +10:30 -> 02:30 +11 at 2024-10-05 15:30 UTC.
    w = window("daily 02:00-03:00")
    assert not w.is_open([LORD_HOWE], utc(2024, 10, 5, 15, 29, 59))
    assert w.next_open([LORD_HOWE], utc(2024, 10, 5, 15, 0)) == utc(2024, 10, 5, 15, 30)
    assert not w.is_open([LORD_HOWE], utc(2024, 10, 5, 16, 0))  # 03:00 +11
    # 2024-04-07 02:00 +11 -> 01:30 +10:30 at 2024-04-06 15:00 UTC.
    again = window("daily 01:45-01:50")
    assert again.next_open([LORD_HOWE], utc(2024, 4, 6, 14, 40)) == utc(2024, 4, 6, 14, 45)
    assert again.next_open([LORD_HOWE], utc(2024, 4, 6, 14, 50)) == utc(2024, 4, 6, 15, 15)


# -- property: next_open is the earliest open instant -------------------------------------

#: 2000-01-01 .. 2037-12-31
T_MIN, T_MAX = 946_684_800_000, 2_145_830_400_000
SCAN_MINUTES = 1500


@st.composite
def instants(draw: st.DrawFn, zones: list[str]) -> int:
    """Epoch ms: anywhere, or within a couple of days of one of the zones' offset changes."""
    base = draw(st.integers(T_MIN, T_MAX))
    if draw(st.booleans()):
        return base
    tr = int(zone_offset_entry(draw(st.sampled_from(zones)), base).split("|")[1])
    if tr == NO_TRANSITION_MS:
        return base
    near = st.integers(-120, 120).map(lambda m: m * 60_000)
    return tr + draw(st.one_of(st.integers(-2 * 86_400_000, 86_400_000), near))


@st.composite
def cases(draw: st.DrawFn) -> tuple[CallingWindow, list[str], int]:
    zones = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True))
    return draw(any_window()), zones, draw(instants(zones))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_next_open_is_the_earliest_open_instant(
    case: tuple[CallingWindow, list[str], int],
) -> None:
    w, zones, t = case
    at = from_ms(t)
    result = w.next_open(zones, at)
    if result is None:
        # Nothing opens within the horizon: look every 10 minutes.
        step = 10 * 60_000
        first = t + step - t % step
        assert not any(w.is_open(zones, from_ms(m)) for m in range(first, t + HORIZON_MS, step))
        return
    assert at <= result <= at + timedelta(milliseconds=HORIZON_MS)
    assert w.is_open(zones, result)
    if result == at:
        return
    assert not w.is_open(zones, at)
    assert not w.is_open(zones, result - timedelta(seconds=1))
    # Every whole minute between (up to a bound) is closed.
    first = t + 60_000 - t % 60_000
    stop = min(ms(result), first + SCAN_MINUTES * 60_000)
    for m in range(first, stop, 60_000):
        assert not w.is_open(zones, from_ms(m)), from_ms(m)


# -- zone offset entries ------------------------------------------------------------------


def offset_min(zone: str, t_ms: int) -> int:
    offset = from_ms(t_ms).astimezone(ZoneInfo(zone)).utcoffset()
    assert offset is not None
    return offset // timedelta(minutes=1)


def test_zone_offset_entries() -> None:
    jan = ms(utc(2024, 1, 15))
    assert zone_offset_entry(NY, jan) == f"-300|{ms(utc(2024, 3, 10, 7))}|-240"
    assert zone_offset_entry(KOLKATA, jan) == f"330|{NO_TRANSITION_MS}|330"
    assert zone_offset_entry(LORD_HOWE, jan) == f"660|{ms(utc(2024, 4, 6, 15))}|630"
    assert zone_offset_entry(LONDON, ms(utc(2024, 6, 1))) == f"60|{ms(utc(2024, 10, 27, 1))}|0"
    # At the change itself the new offset is in force and the next change is the one after.
    change = ms(utc(2024, 3, 10, 7))
    assert zone_offset_entry(NY, change) == f"-240|{ms(utc(2024, 11, 3, 6))}|-300"
    assert zone_offset_entry(NY, change - 1).startswith(f"-300|{change}|")
    # Sao Paulo stopped DST in 2019: no change within 400 days.
    assert zone_offset_entry("America/Sao_Paulo", ms(utc(2024, 1, 1))) == (
        f"-180|{NO_TRANSITION_MS}|-180"
    )
    with pytest.raises(ValueError, match="unknown time zone"):
        zone_offset_entry("Nowhere/Land", jan)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ZONES), st.integers(T_MIN, T_MAX))
def test_zone_offset_entry_agrees_with_zoneinfo(zone: str, t: int) -> None:
    before, tr, after = (int(x) for x in zone_offset_entry(zone, t).split("|"))
    assert before == offset_min(zone, t)
    if tr == NO_TRANSITION_MS:
        assert after == before
        points = [t + i * 86_400_000 * 400 // 50 for i in range(51)]
    else:
        assert tr > t and tr % 1000 == 0 and tr - t <= 400 * 86_400_000
        assert offset_min(zone, tr - 1) == before and offset_min(zone, tr) == after != before
        points = [t + (tr - 1 - t) * i // 50 for i in range(51)]
    assert all(offset_min(zone, p) == before for p in points)


# -- zones of a number --------------------------------------------------------------------


def test_zones_for_number() -> None:
    assert zones_for_number("+12125551234") == (NY,)
    assert zones_for_number("+919876543210") in {("Asia/Calcutta",), ("Asia/Kolkata",)}
    assert zones_for_number("+442071234567") == (LONDON,)
    toll_free = zones_for_number("+18005551234")
    assert NY in toll_free and LA in toll_free and "Etc/Unknown" not in toll_free
    assert zones_for_number("+15555555555") == ()  # no known zone
    assert zones_for_number("+12125551234", override=KOLKATA) == (KOLKATA,)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zones_for_number("+12125551234", override="Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        zones_for_number("+12125551234", override="../etc/passwd")
    with pytest.raises(ValueError, match=r"E\.164"):
        zones_for_number("not a number")
    # The zones phonenumbers gives are usable as they are.
    assert window("trai").is_open(zones_for_number("+919876543210"), utc(2024, 6, 3, 6))
